// Engine connections that the decision keeps in userspace after the handshake
// (issue 8, item 0): the flag turned off mid-handshake (`flag_off`), a suite
// not in ktls.ciphers (`cipher_not_allowed`: with the default policy, every
// ChaCha20 client). They used to stay on Node's TLSSocket over the engine's JS
// Duplex for their whole life (nodejs/node#35384: an assertion there ends the
// process); now the engine hands them off like any other and the JS record
// layer (RecordLayerStream, both sides in JS) serves them: close line
// `record_layer: js`, no install attempted, nothing on the Duplex.
//
// Driven like ktls-engine-path.test.ts: an injected "kTLS available" probe
// puts every connection on the engine path on this kTLS-less host.
// (`sampled_out` cannot reach the engine: sampling is a pre-handshake rule and
// both halves of the decision use the same draw.)
import fs from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import t from 'tap';
import { request } from '../helpers/client.js';
import { startEngineSidecar } from '../helpers/engine-sidecar.js';
import { sendAndHalfClose } from '../helpers/half-close.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import type { Teardown } from '../helpers/teardown.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';
import type { LogLine } from '../helpers/child-sidecar.js';

const skip = skipUnlessKtlsLess('the lab covers the same decisions with real installs');

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);
const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];

/** ChaCha20 only (the test certificate is ECDSA): not in the default ktls.ciphers. */
const CHACHA = {
  'TLSv1.3': { minVersion: 'TLSv1.3', ciphers: 'TLS_CHACHA20_POLY1305_SHA256' },
  'TLSv1.2': { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' },
} as const;

const info = (l: LogLine): Record<string, unknown> => (l['ktls_info'] ?? {}) as Record<string, unknown>;

/** h2 to `port`: POST `body` to /echo and GET /bytes?n=`n`; both bodies' sha256. */
async function h2Exchange(port: number, opts: http2.SecureClientSessionOptions, body: Buffer, n: number): Promise<{ echo: string; bytes: string }> {
  const client = http2.connect(`https://localhost:${port}`, { ca, ...opts });
  const one = (headers: http2.OutgoingHttpHeaders, data?: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const req = client.request(headers);
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
      req.end(data);
    });
  try {
    const [echo, bytes] = await Promise.all([one({ ':method': 'POST', ':path': '/echo' }, body), one({ ':path': `/bytes?n=${n}` })]);
    return { echo: sha256(echo), bytes: sha256(bytes) };
  } finally {
    client.close();
  }
}

/**
 * A TCP relay to `port` that holds the client's second flight: the first
 * client bytes (ClientHello) pass, and once the sidecar has answered, client
 * bytes wait for `release()`. Between the two the test turns the flag off:
 * the engine already runs (the pre-handshake check saw the flag on) and its
 * offload hook, asked at the client's Finished, sees it off.
 */
async function startGate(t: Teardown, port: number) {
  let spoke: () => void = () => undefined;
  let release: () => void = () => undefined;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const up = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    sockets.add(client).add(up);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    let serverSpoke = false;
    let open = false;
    let clientEnded = false;
    const held: Buffer[] = [];
    up.on('data', (d: Buffer) => {
      if (!serverSpoke) spoke();
      serverSpoke = true;
      client.write(d);
    });
    up.on('end', () => client.end());
    client.on('data', (d: Buffer) => {
      if (serverSpoke && !open) held.push(d);
      else up.write(d);
    });
    client.on('end', () => {
      clientEnded = true;
      if (open) up.end();
    });
    release = () => {
      open = true;
      up.write(Buffer.concat(held.splice(0)));
      if (clientEnded) up.end();
    };
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    /** Resolves when the sidecar has answered the next connection's ClientHello. */
    nextSpoke: (): Promise<void> => new Promise((resolve) => (spoke = resolve)),
    release: (): void => release(),
  };
}

t.test('http mode, ChaCha20 (cipher_not_allowed): h1 and h2, TLS 1.3 and 1.2, in the JS record layer', { skip }, async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const sc = await startEngineSidecar(t, [...certArgs, '--upstream-url', up.url]);
  const body = patternBytes(300_000, 5);
  const big = 2 << 20;
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const h1 = await request(sc.port, { method: 'POST', path: '/echo', body, ca: pki.caCert });
    t.equal(sha256(h1.body), sha256(body), `${version}: warm-up h1 (AES-GCM, install_failed) byte-exact`);
    const r = await h2Exchange(sc.port, CHACHA[version], body, big);
    t.equal(r.echo, sha256(body), `${version} h2: 300 KB echo byte-exact`);
    t.equal(r.bytes, sha256(patternBytes(big, 7)), `${version} h2: 2 MiB download byte-exact`);
  }
  // h1 over ChaCha20 (the request helper takes no cipher options).
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const got = await new Promise<Buffer>((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port: sc.port, method: 'POST', path: '/echo', servername: 'localhost', ca, agent: false, ...CHACHA[version] },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => resolve(Buffer.concat(chunks)));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    t.equal(sha256(got), sha256(body), `${version} h1: 300 KB echo byte-exact`);
  }
  const lines = (await sc.closeLines(6)).filter((l) => String(l['cipher']).includes('CHACHA20'));
  t.equal(lines.length, 4, 'four ChaCha20 connections');
  for (const l of lines) {
    t.equal(l['ktls'], 'off');
    t.equal(l['ktls_reason'], 'cipher_not_allowed', `${String(l['protocol'])} ${String(l['tls_version'])}: declined by ktls.ciphers`);
    t.equal(info(l)['record_layer'], 'js', 'served by the JS record layer, not a TLSSocket');
    t.equal(info(l)['engine_fallback'], undefined);
    t.ok(Number(info(l)['bytes_in_userspace']) >= body.length, 'the request body was decrypted in JS');
  }
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'cipher_not_allowed', protocol: 'h2' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls_reason: 'cipher_not_allowed', protocol: 'http1' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_internal_errors_total', { kind: 'engine_fallback' }), 0, 'no connection left on the Duplex');
  // Only the AES-GCM warm-ups attempted an install: a policy "no" attempts nothing.
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'attempted' }), 2);
});

t.test('tcp mode, ChaCha20 (cipher_not_allowed): byte-exact with half-close, TLS 1.3 and 1.2', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const sc = await startEngineSidecar(t, [...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const data = patternBytes(1 << 20, version === 'TLSv1.3' ? 13 : 12);
    const got = await sendAndHalfClose(sc.port, ca, data, CHACHA[version]);
    t.equal(sha256(got.subarray(0, data.length)), sha256(data), `${version}: 1 MiB byte-exact`);
    t.equal(got.subarray(data.length).toString(), '<upstream-bye>', `${version}: half-close forwarded`);
    const l = await sc.closeLine((x) => x['tls_version'] === version);
    t.equal(l['ktls_reason'], 'cipher_not_allowed');
    t.equal(info(l)['record_layer'], 'js');
    t.equal(info(l)['bytes_in_userspace'], data.length);
    t.equal(info(l)['close_notify_in'], true, 'the client\'s close_notify was read in JS');
  }
});

t.test('flag turned off mid-handshake (flag_off): tcp, h1 and h2 go on in the JS record layer', { skip }, async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const http = await startEngineSidecar(t, [...certArgs, '--upstream-url', up.url]);
  const tcp = await startEngineSidecar(t, [...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  const body = patternBytes(200_000, 9);

  /** Start `run` through a gate in front of `sc`, turn the flag off once the engine runs, then let the client finish. */
  async function midHandshake<T>(sc: Awaited<ReturnType<typeof startEngineSidecar>>, run: (port: number) => Promise<T>): Promise<T> {
    const gate = await startGate(t, sc.port);
    sc.flag.set(true, 'admin');
    const spoke = gate.nextSpoke();
    const result = run(gate.port);
    await spoke;
    sc.flag.set(false, 'admin');
    gate.release();
    return result;
  }

  const tcpGot = await midHandshake(tcp, (port) => sendAndHalfClose(port, ca, body));
  t.equal(sha256(tcpGot.subarray(0, body.length)), sha256(body), 'tcp: byte-exact');
  const h1 = await midHandshake(http, (port) => request(port, { method: 'POST', path: '/echo', body, ca: pki.caCert }));
  t.equal(sha256(h1.body), sha256(body), 'h1: byte-exact');
  const h2 = await midHandshake(http, (port) => h2Exchange(port, {}, body, 1 << 20));
  t.equal(h2.echo, sha256(body), 'h2: echo byte-exact');
  t.equal(h2.bytes, sha256(patternBytes(1 << 20, 7)), 'h2: download byte-exact');

  const lines = [...(await tcp.closeLines(1)), ...(await http.closeLines(2))];
  t.same(lines.map((l) => [l['protocol'], l['ktls_reason'], info(l)['record_layer']]).sort(), [
    ['h2', 'flag_off', 'js'],
    ['http1', 'flag_off', 'js'],
    ['tcp', 'flag_off', 'js'],
  ], 'declined by the flag after the engine started: handed off to the JS record layer');
  for (const sc of [http, tcp]) {
    const m = await sc.metrics();
    t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'attempted' }), 0, 'no install attempted');
    t.equal(metricValue(m, 'ktls_sidecar_internal_errors_total', { kind: 'engine_fallback' }), 0);
  }
});

t.test('no exact hand-off state (a CBC suite the operator enabled): stays on the TLSSocket, counted and logged', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const cbc = 'ECDHE-ECDSA-AES128-SHA256';
  const sc = await startEngineSidecar(t, [...certArgs, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`, '--tls-ciphers', cbc]);
  const data = patternBytes(100_000, 41);
  const got = await sendAndHalfClose(sc.port, ca, data, { maxVersion: 'TLSv1.2', ciphers: cbc });
  t.equal(sha256(got.subarray(0, data.length)), sha256(data), 'byte-exact on the TLSSocket');
  const l = await sc.closeLine(() => true);
  t.equal(l['ktls_reason'], 'cipher_not_allowed');
  t.equal(info(l)['record_layer'], 'userspace');
  t.equal(info(l)['engine_fallback'], 'cipher_not_offloadable', 'the close line says it ran over the engine stream');
  t.ok(sc.lines.some((x) => x.event === 'engine_fallback' && x['engine_reason'] === 'cipher_not_offloadable' && x['conn'] === l['conn']), 'logged');
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_internal_errors_total', { kind: 'engine_fallback' }), 1, 'counted');
});
