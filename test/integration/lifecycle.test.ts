// Lifecycle through the real CLI: SIGTERM drains (in-flight requests finish,
// idle keep-alive closes, HTTP/2 gets GOAWAY, readiness 503, exit 0) and
// SIGHUP reloads the config file (a bad new config keeps the old one).
import fs from 'node:fs';
import https from 'node:https';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { handshake, request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());
const ca = fs.readFileSync(pki.caCert);

function writeConfig(file: string, cert: { cert: string; key: string }): void {
  fs.writeFileSync(file, JSON.stringify({ tls: { cert: cert.cert, key: cert.key }, upstream: { url: up.url } }));
}

async function until(pred: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url];
const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-cfg-'));
t.teardown(() => fs.rmSync(cfgDir, { recursive: true, force: true }));
const cfgFile = path.join(cfgDir, 'config.json');
writeConfig(cfgFile, pki.server);
// Start all sidecars at once: startup dominates this file's run time.
const [drainSc, cutSc, hupSc] = await Promise.all([
  startSidecar([...certArgs, '--shutdown-drain-timeout', '10s']),
  startSidecar([...certArgs, '--shutdown-drain-timeout', '300ms']),
  startSidecar(['--config', cfgFile, '--no-config-watch']),
]);

t.test('SIGTERM drains: the in-flight request finishes, readiness 503, idle keep-alive and h2 closed, exit 0', async (t) => {
  const sc = drainSc;
  t.teardown(() => sc.stop('SIGKILL'));
  // An idle keep-alive connection and an HTTP/2 session, open before the signal.
  const agent = new https.Agent({ keepAlive: true, ca });
  t.teardown(() => agent.destroy());
  await request(sc.tlsPort, { agent, path: '/' , ca: pki.caCert });
  const idle = Object.values(agent.freeSockets).flat()[0];
  t.ok(idle, 'idle keep-alive socket exists');
  const idleClosed = new Promise<void>((r) => idle?.once('close', () => r()));
  const h2 = http2.connect(`https://localhost:${sc.tlsPort}`, { ca });
  await new Promise<void>((r) => h2.once('connect', () => r()));
  const goaway = new Promise<void>((r) => h2.once('goaway', () => r()));

  const seenBefore = up.seen.length;
  let inflightDone = false;
  const inflight = request(sc.tlsPort, { path: '/slow?ms=1500', ca: pki.caCert }).finally(() => (inflightDone = true));
  await until(() => up.seen.length > seenBefore, 'the upstream to receive the request');
  sc.proc.kill('SIGTERM');
  await sc.waitForLog((l) => l.event === 'drain');

  const ready = await sc.admin('/readyz');
  t.equal(ready.status, 503, 'readiness 503 while draining');
  await t.rejects(request(sc.tlsPort, { ca: pki.caCert }), 'no new connections');
  await idleClosed;
  t.notOk(inflightDone, 'idle keep-alive connection closed while the request is still in flight');
  await goaway;
  t.notOk(inflightDone, 'HTTP/2 session got GOAWAY while the request is still in flight');
  const r = await inflight;
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'slow\n');
  t.equal(r.headers.connection, 'close');
  t.equal(await sc.exited, 0, 'exit 0');
  h2.destroy();
});

t.test('SIGTERM with a request outliving drainTimeout: cut at the timeout, still exit 0', async (t) => {
  const sc = cutSc;
  t.teardown(() => sc.stop('SIGKILL'));
  const seenBefore = up.seen.length;
  const inflight = request(sc.tlsPort, { path: '/slow?ms=60000', ca: pki.caCert }).then(
    (r) => r.status,
    () => 'cut',
  );
  await until(() => up.seen.length > seenBefore, 'the upstream to receive the request');
  sc.proc.kill('SIGTERM');
  t.equal(await inflight, 'cut');
  t.equal(await sc.exited, 0);
  const line = await sc.waitForLog((l) => l.event === 'connection_closed' && l['protocol'] === 'http1');
  t.equal(line['close_reason'], 'shutdown');
});


t.test('SIGHUP reloads a valid config and rejects an invalid one', async (t) => {
  const file = cfgFile;
  const sc = hupSc;
  t.teardown(() => sc.stop());
  t.equal((await handshake(sc.tlsPort)).cn, 'localhost');

  t.test('valid: new connections get the new certificate', async (t) => {
    writeConfig(file, pki.server2);
    sc.proc.kill('SIGHUP');
    await sc.waitForLog((l) => l.event === 'config_reload' && l['result'] === 'success');
    t.equal((await handshake(sc.tlsPort)).cn, 'localhost-v2');
    t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_config_reloads_total', { result: 'success', trigger: 'sighup' }) >= 1);
  });

  t.test('invalid: logged, counted, and the running config stays', async (t) => {
    // (listen.port would not do: the test's --listen-port flag outranks the file.)
    fs.writeFileSync(file, JSON.stringify({ mode: 'udp', tls: { cert: pki.server.cert, key: pki.server.key }, upstream: { url: up.url } }));
    sc.proc.kill('SIGHUP');
    const line = await sc.waitForLog((l) => l.event === 'config_reload' && l.level === 'error');
    t.match(String((line['err'] as { message?: string } | undefined)?.message), /^mode:/);
    t.equal((await handshake(sc.tlsPort)).cn, 'localhost-v2', 'still the config from the last valid reload');
    t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_config_reloads_total', { result: 'failure', trigger: 'sighup' }) >= 1);
    const r = await request(sc.tlsPort, { ca: pki.caCert });
    t.equal(r.status, 200, 'still serving');
  });
});
