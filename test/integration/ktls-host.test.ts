// The real CLI on this host, whose kernel has no TLS ULP: the startup probe
// says so, every connection (h1, h2, tcp) takes the TLSSocket fast path and
// is labelled ktls="off" with the probe's reason — in /metrics and in the
// close log line — and the runtime flag (PUT /ktls, config-file watch) turns
// the reason into flag_off for the next connection.
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { nativeStatus } from '../../native/index.js';
import { request } from '../helpers/client.js';
import { hostHasKtls } from '../helpers/host-ktls.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type LogLine, type RunningSidecar, startSidecar } from '../helpers/sidecar.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';

if (hostHasKtls()) {
  t.plan(0, 'this kernel has kTLS: these host expectations do not apply');
  process.exit(0);
}
/** What the decision must say on this host: the addon decides which pre-handshake rule fires first. */
const reason = nativeStatus().available ? 'kernel_no_tls' : 'native_unavailable';

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);
const [up, echo] = await Promise.all([startUpstream(), startTcpUpstream(false)]);
t.teardown(() => Promise.all([up.close(), echo.close()]));
const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-host-cfg-'));
t.teardown(() => fs.rmSync(cfgDir, { recursive: true, force: true }));
const cfgFile = path.join(cfgDir, 'config.json');
const hupFile = path.join(cfgDir, 'hup.json');
const writeConfig = (enabled: boolean, file = cfgFile): void =>
  fs.writeFileSync(file, JSON.stringify({ tls: { cert: pki.server.cert, key: pki.server.key }, upstream: { url: up.url }, ktls: { enabled } }));
writeConfig(true);
writeConfig(true, hupFile);

const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const [httpSc, tcpSc, flagSc, watchSc, hupSc] = await Promise.all([
  startSidecar([...certArgs, '--upstream-url', up.url]),
  startSidecar([...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]),
  startSidecar([...certArgs, '--upstream-url', up.url]),
  startSidecar(['--config', cfgFile]),
  startSidecar(['--config', hupFile, '--no-config-watch']),
]);
t.teardown(() => Promise.all([httpSc.stop(), tcpSc.stop(), flagSc.stop(), watchSc.stop(), hupSc.stop()]));

function put(port: number, pathname: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathname, method: 'PUT', headers: { 'content-type': 'application/json' } }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function until(pred: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function closeLine(sc: RunningSidecar, protocol: string): Promise<LogLine> {
  return sc.waitForLog((l) => l.event === 'connection_closed' && l['protocol'] === protocol);
}

t.test('the startup line reports the kernel probe', async (t) => {
  const line = await httpSc.waitForLog((l) => l.event === 'startup');
  const kernel = (line['ktls'] as { kernel: Record<string, unknown> }).kernel;
  t.equal(kernel['available'], false);
  t.equal(kernel['release'], os.release());
  t.type(kernel['reason'], 'string', 'the probe says why');
  t.same(kernel['ciphers'], [], 'no cipher is supported');
  t.equal(kernel['rekey'], false);
});

t.test('probe metrics are on /metrics', async (t) => {
  const m = await httpSc.metrics();
  t.notMatch(m, /^ktls_sidecar_kernel_tls_available /m, 'the duplicate availability gauge is gone');
  t.match(m, /^ktls_sidecar_ktls_kernel_available 0$/m);
  t.match(m, new RegExp(`^ktls_sidecar_native_available ${nativeStatus().available ? 1 : 0}$`, 'm'));
  t.equal(metricValue(m, 'ktls_sidecar_kernel_cipher_supported', { version: 'TLSv1.3', cipher: 'AES_GCM_128', direction: 'tx' }), 0);
  t.match(m, /^ktls_sidecar_process_cpu_seconds_by_mode_total\{ktls="off"\} /m, 'CPU by mode is exported');
});

t.test(`h1 and h2 connections are ktls="off" with reason ${reason}`, async (t) => {
  const r = await request(httpSc.tlsPort, { path: '/', ca: pki.caCert });
  t.equal(r.status, 200);
  const client = http2.connect(`https://localhost:${httpSc.tlsPort}`, { ca });
  await new Promise<void>((resolve, reject) => {
    const req = client.request({ ':path': '/' });
    req.on('error', reject);
    req.on('end', () => resolve());
    req.resume();
  });
  client.close();
  const [h1Line, h2Line] = await Promise.all([closeLine(httpSc, 'http1'), closeLine(httpSc, 'h2')]);
  for (const line of [h1Line, h2Line]) {
    t.equal(line['ktls'], 'off');
    t.equal(line['ktls_reason'], reason);
    t.equal(line['direction'], 'none');
    t.same(line['ktls_info'], { record_layer: 'userspace', tx: 'userspace', rx: 'userspace', ktls_decision: 'userspace' });
  }
  const m = await httpSc.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: reason, protocol: 'http1' }) >= 1);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: reason, protocol: 'h2' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'on' }), 0);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', {}), 0, 'no install attempted');
});

t.test(`tcp mode connections are ktls="off" with reason ${reason}`, async (t) => {
  const data = patternBytes(200_000, 11);
  const got = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = tls.connect({ host: '127.0.0.1', port: tcpSc.tlsPort, ca, servername: 'localhost' }, () => s.write(data));
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (Buffer.concat(chunks).length >= data.length) s.end();
    });
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
  t.equal(sha256(got.subarray(0, data.length)), sha256(data));
  const line = await closeLine(tcpSc, 'tcp');
  t.equal(line['ktls'], 'off');
  t.equal(line['ktls_reason'], reason);
  const m = await tcpSc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: reason, protocol: 'tcp' }), 1);
});

t.test('PUT /ktls {"enabled":false}: gauge 0 and the next connection is flag_off', async (t) => {
  const before = await flagSc.metrics();
  t.match(before, /^ktls_sidecar_ktls_enabled 1$/m);
  const r = await put(flagSc.adminPort, '/ktls', '{"enabled":false}');
  t.equal(r.status, 200);
  t.match(r.body, /"enabled":false/);
  await request(flagSc.tlsPort, { path: '/', ca: pki.caCert });
  const line = await flagSc.waitForLog((l) => l.event === 'connection_closed' && l['ktls_reason'] === 'flag_off');
  t.equal(line['ktls'], 'off');
  const m = await flagSc.metrics();
  t.match(m, /^ktls_sidecar_ktls_enabled 0$/m);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'flag_off' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_flag_changes_total', { source: 'admin' }), 1);
});

t.test('the config-file watch flips the flag', async (t) => {
  t.match(await watchSc.metrics(), /^ktls_sidecar_ktls_enabled 1$/m);
  writeConfig(false);
  await until(async () => /^ktls_sidecar_ktls_enabled 0$/m.test(await watchSc.metrics()), 'the watch to turn the flag off');
  await request(watchSc.tlsPort, { path: '/', ca: pki.caCert });
  await watchSc.waitForLog((l) => l.event === 'connection_closed' && l['ktls_reason'] === 'flag_off');
  const m = await watchSc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_ktls_flag_changes_total', { source: 'config_watch' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'flag_off' }), 1);
});

t.test('SIGHUP sets the flag from the reloaded file', async (t) => {
  t.match(await hupSc.metrics(), /^ktls_sidecar_ktls_enabled 1$/m);
  writeConfig(false, hupFile);
  hupSc.proc.kill('SIGHUP');
  await until(async () => /^ktls_sidecar_ktls_enabled 0$/m.test(await hupSc.metrics()), 'SIGHUP to turn the flag off');
  await request(hupSc.tlsPort, { path: '/', ca: pki.caCert });
  await hupSc.waitForLog((l) => l.event === 'connection_closed' && l['ktls_reason'] === 'flag_off');
  const m = await hupSc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_ktls_flag_changes_total', { source: 'sighup' }), 1);
});
