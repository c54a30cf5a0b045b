// Connection storms against limits.maxConnections 50: 500 connect-then-FIN
// (what TCP health checks and port scans do) and 60 half-open handshakes
// (half a ClientHello, then silence). Every slot comes back, every accepted
// connection is counted exactly once (accepted = rejected + handshake
// failures + opened), and a TLS client is served afterwards.
import net from 'node:net';
import t, { type Test } from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { clientHelloPrefix } from './helpers/raw.js';
import { startRecordingUpstream } from './helpers/recording-upstream.js';
import { activeConnections, checkRecovered, eventually, type Usage, warmBaseline } from './helpers/resources.js';

const MAX_CONNECTIONS = 50;
const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const sc = await startSidecar([
  '--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url,
  '--limits-max-connections', String(MAX_CONNECTIONS),
  '--timeouts-handshake', '1s',
]);
t.teardown(() => sc.stop());
const ca = pki.caCert;
let base: Usage | undefined;
t.before(async () => {
  base = await warmBaseline(sc, ca, up);
});

interface Counts {
  accepted: number;
  rejected: number;
  failures: number;
  opened: number;
  limit: number;
  timeouts: number;
}

async function counts(): Promise<Counts> {
  const m = await sc.metrics();
  return {
    accepted: metricValue(m, 'ktls_sidecar_connections_accepted_total'),
    rejected: metricValue(m, 'ktls_sidecar_connections_rejected_total'),
    failures: metricValue(m, 'ktls_sidecar_handshake_failures_total'),
    opened: metricValue(m, 'ktls_sidecar_connections_opened_total'),
    limit: metricValue(m, 'ktls_sidecar_connections_rejected_total', { reason: 'limit' }),
    // A stalled handshake is one of these two, depending on how far it got.
    timeouts: metricValue(m, 'ktls_sidecar_handshake_failures_total', { reason: 'timeout' }) + metricValue(m, 'ktls_sidecar_connections_rejected_total', { reason: 'handshake_timeout' }),
  };
}

const delta = (a: Counts, b: Counts): Counts =>
  Object.fromEntries(Object.keys(a).map((k) => [k, b[k as keyof Counts] - a[k as keyof Counts]])) as unknown as Counts;

/** Every accepted connection ended in exactly one of rejected, handshake failure, opened. */
function accounted(t: Test, d: Counts): void {
  t.equal(d.accepted, d.rejected + d.failures + d.opened, `accepted ${d.accepted} = rejected ${d.rejected} + handshake failures ${d.failures} + opened ${d.opened}`);
}

/** Connect, send `bytes` (if any), then FIN (`fin`) or silence; resolves when the server closed it or `waitMs` passed. */
function poke(bytes: Buffer | undefined, fin: boolean, waitMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(sc.tlsPort, '127.0.0.1', () => {
      if (bytes) s.write(bytes);
      if (fin) s.end();
    });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, waitMs);
    s.on('error', () => undefined);
    s.resume();
    s.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

t.test('connect-FIN storm: 500 connections closed without a byte, 25 at a time', async (t) => {
  const before = await counts();
  let closedByServer = 0;
  for (let i = 0; i < 500; i += 25) {
    const batch = await Promise.all(Array.from({ length: 25 }, () => poke(undefined, true, 1000)));
    closedByServer += batch.filter(Boolean).length;
  }
  t.equal(closedByServer, 500, 'the sidecar closed every one of them at once (no slot kept in CLOSE-WAIT)');
  t.ok(await eventually(async () => (await counts()).accepted - before.accepted >= 500, 3000), 'all 500 accepted');
  const d = delta(before, await counts());
  t.equal(d.limit, 0, 'none refused for the connection limit: slots came back');
  accounted(t, d);
  const r = await request(sc.tlsPort, { ca });
  t.equal(r.status, 200, 'a TLS client is served afterwards');
  t.ok(await eventually(async () => (await activeConnections(sc)) === 0, 3000), 'no connection left open');
});

t.test(`half-open storm: 60 × half a ClientHello then silence; ${MAX_CONNECTIONS} hold slots until timeouts.handshake (1 s), 10 are refused`, async (t) => {
  const hello = await clientHelloPrefix(1 << 16);
  const half = hello.subarray(0, Math.floor(hello.length / 2));
  const before = await counts();
  const socks: Array<Promise<boolean>> = [];
  // Opened one at a time, so the first 50 are the ones holding the slots.
  for (let i = 0; i < 60; i++) {
    socks.push(poke(half, false, 6000));
    await new Promise((r) => setTimeout(r, 5));
  }
  const closed = await Promise.all(socks);
  t.equal(closed.filter(Boolean).length, 60, 'the sidecar closed all 60 (no FIN from the client needed)');
  const d = delta(before, await counts());
  t.equal(d.accepted, 60);
  t.equal(d.limit, 10, '10 refused over limits.maxConnections');
  t.equal(d.timeouts, MAX_CONNECTIONS, `${MAX_CONNECTIONS} ended by timeouts.handshake`);
  accounted(t, d);
  const r = await request(sc.tlsPort, { ca });
  t.equal(r.status, 200, 'a TLS client is served afterwards');
});

checkRecovered(t, sc, () => base as Usage, ca, { up });
