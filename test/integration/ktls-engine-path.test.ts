// The kTLS path of the listener, driven on this kernel-less host: the Sidecar
// gets an injected probe that says kTLS is available (the native addon is the
// real one), so connections go through the HandshakeEngine, the offload hook
// says yes, the hand-off happens, and installKtls() fails for real (TCP_ULP
// "tls" → ENOENT). The connection must go on in the JS record layer,
// byte-exact, labelled `install_failed`, with the errno counted — which proves
// the engine path is wired end to end. (In the QEMU lab the same path installs
// for real: test/lab.)
import fs from 'node:fs';
import http2 from 'node:http2';
import type tls from 'node:tls';
import t from 'tap';
import { engineUserspaceReason } from '../../proxy/connection/record-layer.js';
import { request } from '../helpers/client.js';
import { startEngineSidecar } from '../helpers/engine-sidecar.js';
import { sendAndHalfClose } from '../helpers/half-close.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import type { Teardown } from '../helpers/teardown.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';

const skip = skipUnlessKtlsLess('the lab covers the real install');

/** The engine sidecar, with a short CPU accounting interval so the per-mode CPU counter moves within the test. */
const startInProcess = (t: Teardown, argv: string[]) => startEngineSidecar(t, argv, { cpuIntervalMs: 20 });

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);
const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];

function exchange(port: number, data: Buffer, opts: tls.ConnectionOptions = {}): Promise<Buffer> {
  return sendAndHalfClose(port, ca, data, opts);
}

t.test('tcp mode through the engine: install fails with ENOENT, the connection goes on in JS byte-exact', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const sc = await startInProcess(t, [...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const data = patternBytes(1 << 20, version === 'TLSv1.3' ? 3 : 4);
    const got = await exchange(sc.port, data, { minVersion: version, maxVersion: version });
    t.equal(got.length, data.length + '<upstream-bye>'.length, `${version}: every byte came back`);
    t.equal(sha256(got.subarray(0, data.length)), sha256(data), `${version}: byte-exact`);
    t.equal(got.subarray(data.length).toString(), '<upstream-bye>', `${version}: half-close forwarded`);
    const line = await sc.closeLine((l) => l['tls_version'] === version);
    t.equal(line['ktls'], 'off');
    t.equal(line['ktls_reason'], 'install_failed');
    const info = line['ktls_info'] as Record<string, unknown>;
    t.equal(info['record_layer'], 'js', 'the JS record layer carried it');
    t.equal(info['tx'], 'userspace');
    t.equal(info['rx'], 'userspace');
    t.equal(info['bytes_in_userspace'], data.length, 'every received byte was decrypted in JS');
  }
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: 'install_failed', protocol: 'tcp' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_errors_total', { errno: 'ENOENT', stage: 'ulp' }), 2, 'ENOENT at TCP_ULP, once per connection');
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'attempted', direction: 'tx' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'failed', direction: 'tx' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'installed' }), 0);
  t.equal(metricValue(m, 'ktls_sidecar_bytes_received_total', { ktls_reason: 'install_failed' }), 2 << 20);
  // Bytes wait for the next accounting interval: the one that takes them books its CPU as off.
  let cpu = '';
  for (let i = 0; i < 400 && !(metricValue(cpu, 'ktls_sidecar_process_cpu_seconds_by_mode_total', { ktls: 'off' }) > 0); i++) {
    await new Promise((r) => setTimeout(r, 25));
    cpu = await sc.metrics();
  }
  t.ok(metricValue(cpu, 'ktls_sidecar_process_cpu_seconds_by_mode_total', { ktls: 'off' }) > 0, 'CPU attributed to ktls="off"');
  t.equal(metricValue(cpu, 'ktls_sidecar_process_cpu_seconds_by_mode_total', { ktls: 'on' }), 0, 'nothing was on kTLS');
});

t.test('engine userspace results map to a ktls_reason', (t) => {
  t.equal(engineUserspaceReason('engine_not_quiet', { mode: 'userspace', reason: 'sampled_out' }, 'TLSv1.3'), 'sampled_out', 'the hook\'s own reason');
  t.equal(engineUserspaceReason('tracker_desync', { mode: 'userspace', reason: 'cipher_not_allowed' }, 'TLSv1.2'), 'cipher_not_allowed');
  t.equal(engineUserspaceReason('cipher_not_offloadable', undefined, 'TLSv1.2'), 'cipher_not_allowed', 'a suite the kernel cannot hold');
  t.equal(engineUserspaceReason('cipher_not_offloadable', undefined, 'TLSv1.1'), 'version_not_offloadable');
  for (const r of ['tracker_desync', 'handoff_verify_failed', 'engine_not_quiet', 'read_stop_unavailable'] as const) {
    t.equal(engineUserspaceReason(r, { mode: 'tx', reason: 'enabled' }, 'TLSv1.3'), 'handoff_failed', r);
  }
  t.end();
});

t.test('http mode through the engine: h1 and h2 byte-exact, mTLS identity from the engine facts', { skip }, async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const sc = await startInProcess(t, [...certArgs, '--upstream-url', up.url, '--tls-client-ca', pki.caCert, '--no-tls-request-cert']);

  const body = patternBytes(300_000, 7);
  const r = await request(sc.port, { method: 'POST', path: '/echo', body, ca: pki.caCert });
  t.equal(r.status, 200);
  t.equal(sha256(r.body), sha256(body), 'h1 echo byte-exact');

  const client = http2.connect(`https://localhost:${sc.port}`, { ca });
  t.teardown(() => client.close());
  const h2 = await new Promise<{ status: number; data: Buffer }>((resolve, reject) => {
    const req = client.request({ ':method': 'POST', ':path': '/echo' });
    const chunks: Buffer[] = [];
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => resolve({ status, data: Buffer.concat(chunks) }));
    req.on('error', reject);
    req.end(body);
  });
  t.equal(h2.status, 200);
  t.equal(sha256(h2.data), sha256(body), 'h2 echo byte-exact');
  client.close();

  // Optional mTLS: a verified client certificate reaches the upstream as XFCC,
  // built from the engine's peer certificate (there is no TLSSocket to ask).
  const x = await request(sc.port, { path: '/headers', ca: pki.caCert, cert: pki.client.cert, key: pki.client.key });
  const headers = JSON.parse(x.body.toString()) as Record<string, string>;
  const xfcc = headers['x-forwarded-client-cert'] ?? '';
  const der = new (await import('node:crypto')).X509Certificate(fs.readFileSync(pki.client.cert)).raw;
  t.match(xfcc, `Hash=${sha256(der)}`);
  t.match(xfcc, 'URI=spiffe://test/client');

  const m = await sc.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'install_failed', protocol: 'http1' }) >= 2);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'install_failed', protocol: 'h2' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'kernel_no_tls' }), 0, 'no connection took the fast path');
});

t.test('flag off: the next connection skips the engine with flag_off', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const sc = await startInProcess(t, [...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  sc.flag.set(false, 'admin');
  const data = patternBytes(10_000, 9);
  const got = await exchange(sc.port, data);
  t.equal(sha256(got.subarray(0, data.length)), sha256(data));
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: 'flag_off' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'attempted' }), 0, 'no install was attempted');
  t.equal(metricValue(m, 'ktls_sidecar_ktls_enabled'), 0);
});
