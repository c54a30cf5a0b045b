// Issue 8, item 1: a client that connects and closes without sending a byte
// (a Kubernetes tcpSocket probe, a load-balancer health check) must give its
// slot and fd back at once. Regression: the listener is allowHalfOpen, sniff()
// resolved 'closed' on the FIN and nobody destroyed the raw socket, so each
// probe left a CLOSE-WAIT socket holding a limits.maxConnections slot for ever
// (every later TLS client refused with rejected{limit}), `no_data` was in no
// metric, and every shutdown waited the full drain timeout.
// The repro of the issue, in both modes: maxConnections 20, 25 probes, then a
// TLS client must be served, and a shutdown must not wait for drainTimeout.
import fs from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { request } from '../helpers/client.js';
import { sendAndHalfClose } from '../helpers/half-close.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type RunningSidecar, startSidecar } from '../helpers/sidecar.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import type { Teardown } from '../helpers/teardown.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);
const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const PROBES = 25;
const LIMIT = 20;

/** `socket.create_connection(...).close()`: connect, then close (FIN) without a byte. */
function probe(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.destroy());
    s.on('error', () => undefined);
    s.on('close', () => resolve());
  });
}

/** Open file descriptors of a process (sockets included). */
function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

const closeLines = (sc: RunningSidecar) => sc.logs.filter((l) => l.event === 'connection_closed');

/** Poll `cond` every 25 ms for up to 5 s. */
async function eventually(cond: () => boolean): Promise<boolean> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  return cond();
}

const modes = {
  http: async (t: Teardown) => {
    const up = await startUpstream();
    t.teardown(() => up.close());
    return {
      args: ['--upstream-url', up.url],
      serve: async (port: number) => (await request(port, { ca: pki.caCert })).status === 200,
    };
  },
  tcp: async (t: Teardown) => {
    const echo = await startTcpUpstream(false);
    t.teardown(() => echo.close());
    return {
      args: ['--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`],
      serve: async (port: number) => (await sendAndHalfClose(port, ca, Buffer.from('ping'))).toString() === 'ping<upstream-bye>',
    };
  },
};

for (const [mode, setup] of Object.entries(modes)) {
  t.test(`${mode} mode: ${PROBES} connect-then-close probes with maxConnections ${LIMIT} leave no slot or fd behind`, async (t) => {
    const m = await setup(t);
    const sc = await startSidecar([...certArgs, ...m.args, '--limits-max-connections', String(LIMIT), '--shutdown-drain-timeout', '60s']);
    t.teardown(() => sc.stop('SIGKILL'));
    const pid = sc.proc.pid ?? 0;
    const fdsBefore = fdCount(pid);

    // One at a time, each until the sidecar has logged it, so the order is deterministic.
    for (let i = 1; i <= PROBES; i++) {
      await probe(sc.tlsPort);
      t.ok(await eventually(() => closeLines(sc).length >= i), `probe ${i} logged`);
    }
    const reasons = closeLines(sc).map((l) => l['close_reason']);
    t.same(reasons, Array<string>(PROBES).fill('no_data'), 'every probe is no_data, none refused for the limit');
    const metrics = await sc.metrics();
    t.equal(metricValue(metrics, 'ktls_sidecar_connections_rejected_total', { reason: 'no_data' }), PROBES, 'no_data is counted');
    t.equal(metricValue(metrics, 'ktls_sidecar_connections_rejected_total', { reason: 'limit' }), 0);
    t.ok(await eventually(() => fdCount(pid) <= fdsBefore), 'no socket of a probe is still open in the sidecar');

    t.ok(await m.serve(sc.tlsPort), 'a TLS client is served after the probes');
    t.ok(await eventually(() => closeLines(sc).length === PROBES + 1), 'the TLS connection closed');

    // Nothing is open: the shutdown must not wait for the 60 s drain timeout.
    const stopped = sc.stop('SIGTERM');
    const drain = await sc.waitForLog((l) => l.event === 'drain', 5000);
    t.equal(drain['connections'], 0, 'no connection open at shutdown');
    const done = await sc.waitForLog((l) => l.event === 'drain_done', 5000);
    t.equal(done['closed_by_timeout'], 0);
    t.equal(await stopped, 0, 'clean exit');
  });
}
