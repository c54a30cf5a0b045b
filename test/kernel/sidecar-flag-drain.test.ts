// The real sidecar under concurrent keep-alive load while the kTLS flag goes
// off and on again with PUT /ktls: no request is lost (a request cut by the
// keep-alive close race on a reused connection, before any answer byte, is
// retried once — what RFC 9112 §9.3.1 allows any HTTP client — and counted),
// every answer is byte-exact, and after ktls.drainTimeout no connection is
// left active on kTLS; after the flag is back on, new connections use kTLS.
import t from 'tap';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { labPki, labSkip, startHttpLabSidecar } from './helpers/sidecar-lab.js';

const DRAIN_TIMEOUT_MS = 3000;
const WORKERS = 4;
const N = 2048;

interface Stats {
  ok: number;
  retried: number;
  failed: string[];
}

function getOnce(agent: https.Agent, port: number, ca: Buffer): Promise<{ body: Buffer; status: number } | { err: Error; retriable: boolean }> {
  return new Promise((resolve) => {
    let gotResponse = false;
    const req = https.request({ host: '127.0.0.1', port, path: `/bytes?n=${N}`, servername: 'localhost', ca, agent }, (res) => {
      gotResponse = true;
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ body: Buffer.concat(chunks), status: res.statusCode ?? 0 }));
      res.on('error', (err) => resolve({ err, retriable: false }));
    });
    // reusedSocket: node's marker for exactly this race (docs: "retry on ECONNRESET").
    req.on('error', (err) => resolve({ err, retriable: req.reusedSocket && !gotResponse }));
    req.end();
  });
}

t.test('flag off → on under keep-alive load', { skip: labSkip }, async (t) => {
  const sc = await startHttpLabSidecar(t, { enabled: true, direction: 'tx', drainTimeout: `${DRAIN_TIMEOUT_MS}ms` });
  const ca = readFileSync(labPki().caCert);
  const want = sha256(patternBytes(N, 7));
  const stats: Stats = { ok: 0, retried: 0, failed: [] };
  const perWorker = new Array<number>(WORKERS).fill(0);
  let stop = false;
  const agents: https.Agent[] = [];
  const workers = Array.from({ length: WORKERS }, async (_, w) => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    while (!stop) {
      let r = await getOnce(agent, sc.tlsPort, ca);
      if ('err' in r && r.retriable) {
        stats.retried++;
        r = await getOnce(agent, sc.tlsPort, ca);
      }
      if ('err' in r) stats.failed.push(`${r.err.message}`);
      else if (r.status !== 200 || sha256(r.body) !== want) stats.failed.push(`status ${r.status}, ${r.body.length} B`);
      else {
        stats.ok++;
        perWorker[w] = (perWorker[w] ?? 0) + 1;
      }
    }
  });
  t.teardown(() => {
    stop = true;
    for (const a of agents) a.destroy();
  });
  const everyWorkerDid = async (n: number): Promise<void> => {
    const base = [...perWorker];
    while (perWorker.some((c, i) => c - (base[i] ?? 0) < n) && stats.failed.length === 0) await new Promise((r) => setTimeout(r, 50));
  };

  await everyWorkerDid(3);
  t.ok((await sc.metric('ktls_sidecar_connections_active', { ktls: 'on' })) >= 1, 'load runs on kTLS connections');
  const drainedBefore = await sc.metric('ktls_sidecar_ktls_drained_connections_total', { action: 'closed' });

  await sc.setKtls(false);
  await new Promise((r) => setTimeout(r, DRAIN_TIMEOUT_MS));
  // The drain timer has had drainTimeout; give a loaded emulated VM a moment to run it.
  let active = await sc.metric('ktls_sidecar_connections_active', { ktls: 'on' });
  for (let i = 0; i < 50 && active > 0; i++) {
    await new Promise((r) => setTimeout(r, 200));
    active = await sc.metric('ktls_sidecar_connections_active', { ktls: 'on' });
  }
  t.equal(active, 0, 'after ktls.drainTimeout no connection is active with ktls="on"');
  t.ok((await sc.metric('ktls_sidecar_ktls_drained_connections_total', { action: 'closed' })) - drainedBefore >= 1, 'kTLS connections were drained');
  await everyWorkerDid(3);
  t.ok((await sc.metric('ktls_sidecar_connections_active', { ktls: 'off', ktls_reason: 'flag_off' })) >= 1, 'load continues on userspace connections');

  const onBefore = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on' });
  await sc.setKtls(true);
  // Keep-alive connections opened while off stay userspace; make the workers reconnect.
  for (const a of agents) a.destroy();
  await everyWorkerDid(3);
  stop = true;
  await Promise.all(workers);
  t.ok((await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on' })) - onBefore >= 1, 'flag back on: new connections on kTLS');
  t.same(stats.failed, [], 'no request lost');
  t.comment(`requests ok=${stats.ok}, retried after a keep-alive close race=${stats.retried}`);
});
