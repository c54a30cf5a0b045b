// HTTP mode through the real CLI: forwarding headers, hop-by-hop removal,
// byte-exact bodies both ways, HTTP/2 clients, WebSocket upgrades, 431.
import http2 from 'node:http2';
import { Readable } from 'node:stream';
import t from 'tap';
import WebSocket from 'ws';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { startStand } from '../helpers/stand.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';

const { pki, up, sc } = await startStand(t, startUpstream, ['--limits-max-header-size', '8192']);
const port = sc.tlsPort;
const ca = pki.caCert;

t.test('X-Forwarded-For/Proto/Host/Port reach the upstream', async (t) => {
  const r = await request(port, { path: '/headers', ca, headers: { 'x-forwarded-for': '203.0.113.9' } });
  const h = JSON.parse(r.body.toString()) as Record<string, string>;
  t.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
  t.equal(h['x-forwarded-proto'], 'https');
  t.equal(h['x-forwarded-host'], `127.0.0.1:${port}`, 'Host as the client sent it');
  t.equal(h['x-forwarded-port'], String(port));
});

t.test('a client-sent x-forwarded-client-cert is stripped without mTLS', async (t) => {
  const r = await request(port, { path: '/headers', ca, headers: { 'x-forwarded-client-cert': 'Hash=forged;Subject="CN=admin"' } });
  const h = JSON.parse(r.body.toString()) as Record<string, string>;
  t.notOk('x-forwarded-client-cert' in h);
});

t.test('hop-by-hop request headers are removed (RFC 9110 7.6.1)', async (t) => {
  const r = await request(port, {
    path: '/headers',
    ca,
    headers: { connection: 'keep-alive, x-private', 'x-private': '1', 'keep-alive': 'timeout=5', 'proxy-connection': 'keep-alive', te: 'trailers', 'x-end-to-end': 'kept' },
  });
  const h = JSON.parse(r.body.toString()) as Record<string, string>;
  t.notOk('x-private' in h, 'Connection-listed header removed');
  t.notOk('keep-alive' in h);
  t.notOk('proxy-connection' in h);
  t.notOk('te' in h);
  t.equal(h['x-end-to-end'], 'kept');
});

t.test('hop-by-hop response headers are removed', async (t) => {
  const r = await request(port, { path: '/hop', ca });
  t.equal(r.status, 200);
  t.notOk('x-upstream-private' in r.headers, 'Connection-listed response header removed');
  t.notOk('keep-alive' in r.headers);
  t.notOk('proxy-connection' in r.headers);
  t.equal(r.headers['x-end-to-end'], 'yes');
});

for (const size of [0, 1024, 16 * 1024 * 1024]) {
  t.test(`upload of ${size} bytes arrives byte-exact`, async (t) => {
    const body = patternBytes(size, size + 3);
    const r = await request(port, { method: 'POST', path: '/sha', ca, body, headers: { 'content-length': String(size) } });
    const got = JSON.parse(r.body.toString()) as { sha256: string; length: number };
    t.equal(got.length, size);
    t.equal(got.sha256, sha256(body));
  });
  t.test(`download of ${size} bytes arrives byte-exact`, async (t) => {
    const started = performance.now();
    const r = await request(port, { path: `/bytes?n=${size}`, ca });
    const secs = (performance.now() - started) / 1000;
    t.equal(r.body.length, size);
    t.equal(sha256(r.body), sha256(patternBytes(size, 7)));
    if (size >= 1024 * 1024) t.comment(`proxied download throughput: ${(size / 1024 / 1024 / secs).toFixed(1)} MiB/s (${size} B in ${(secs * 1000).toFixed(0)} ms)`);
  });
}

t.test('a chunked upload arrives byte-exact and chunked', async (t) => {
  const parts = [patternBytes(1000, 1), patternBytes(70_000, 2), patternBytes(5, 3)];
  const r = await request(port, { method: 'POST', path: '/sha', ca, body: Readable.from(parts) });
  const got = JSON.parse(r.body.toString()) as { sha256: string; length: number; te: string | null };
  t.equal(got.length, 71_005);
  t.equal(got.sha256, sha256(Buffer.concat(parts)));
  t.equal(got.te, 'chunked');
});

t.test('a 16 MiB body echoes both ways at once (streaming, sha256)', async (t) => {
  const body = patternBytes(16 * 1024 * 1024, 99);
  const started = performance.now();
  const r = await request(port, { method: 'POST', path: '/echo', ca, body: Readable.from([body.subarray(0, 8 << 20), body.subarray(8 << 20)]) });
  const secs = (performance.now() - started) / 1000;
  t.equal(r.body.length, body.length);
  t.equal(sha256(r.body), sha256(body));
  t.comment(`proxied echo throughput: ${(32 / secs).toFixed(1)} MiB/s through the sidecar (16 MiB up + 16 MiB down in ${(secs * 1000).toFixed(0)} ms)`);
});

t.test('HTTP/2 clients (ALPN h2) are proxied to the HTTP/1.1 upstream', async (t) => {
  const client = http2.connect(`https://localhost:${port}`, { ca: (await import('node:fs')).readFileSync(ca) });
  t.teardown(() => client.close());
  const body = patternBytes(300_000, 5);
  const res = await new Promise<{ status: number; data: Buffer; alpn: string | undefined }>((resolve, reject) => {
    const req = client.request({ ':method': 'POST', ':path': '/echo', 'content-type': 'application/octet-stream' });
    const chunks: Buffer[] = [];
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => resolve({ status, data: Buffer.concat(chunks), alpn: client.alpnProtocol }));
    req.on('error', reject);
    req.end(body);
  });
  t.equal(res.alpn, 'h2');
  t.equal(res.status, 200);
  t.equal(sha256(res.data), sha256(body));
  const seen = up.seen.filter((s) => s.url === '/echo').pop();
  t.equal(seen?.httpVersion, '1.1', 'upstream saw HTTP/1.1');
});

t.test('WebSocket upgrade echoes through the sidecar', async (t) => {
  const ws = new WebSocket(`wss://localhost:${port}/ws`, { ca: (await import('node:fs')).readFileSync(ca) });
  t.teardown(() => ws.close());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const reply = await new Promise<string>((resolve) => {
    ws.once('message', (d: Buffer) => resolve(d.toString()));
    ws.send('ping');
  });
  t.equal(reply, 'echo:ping');
});

t.test('oversize request headers get 431 and are counted', async (t) => {
  const r = await request(port, { path: '/', ca, headers: { 'x-big': 'a'.repeat(10_000) } });
  t.equal(r.status, 431);
  t.match(r.body.toString(), /Header Fields Too Large/);
  const m = await sc.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_http_requests_total', { protocol: 'http1', status_class: '4xx' }) >= 1);
  const ok = await request(port, { path: '/', ca });
  t.equal(ok.status, 200, 'other connections unaffected');
});

t.test('byte counters are plaintext application bytes', async (t) => {
  const m = await sc.metrics();
  const rx = metricValue(m, 'ktls_sidecar_bytes_received_total');
  // At least the 16 MiB uploads plus the echo, not the handshake ciphertext multiple.
  t.ok(rx >= 32 * 1024 * 1024, `rx=${rx}`);
});
