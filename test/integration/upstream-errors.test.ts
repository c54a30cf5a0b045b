// Upstream down → 502, upstream too slow → 504: short plain bodies, counted
// by reason, and the next request on a healthy path still works.
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { deadPort, startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());

const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const [down, slow] = await Promise.all([
  startSidecar([...certArgs, '--upstream-url', `http://127.0.0.1:${await deadPort()}`]),
  startSidecar([...certArgs, '--upstream-url', up.url, '--timeouts-upstream-response', '1000ms']),
]);
t.teardown(() => Promise.all([down.stop(), slow.stop()]));

t.test('upstream down answers 502 with a short plain body, counted connect_refused', async (t) => {
  const r = await request(down.tlsPort, { ca: pki.caCert });
  t.equal(r.status, 502);
  t.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  t.match(r.body.toString(), /upstream is not reachable/);
  t.ok(metricValue(await down.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'connect_refused' }) >= 1);
});

t.test('readiness is 503 while the upstream refuses TCP', async (t) => {
  const r = await down.admin('/readyz');
  t.equal(r.status, 503);
  t.match(r.body, /"name":"upstream","ok":false/);
});

t.test('a slow upstream answers 504, counted response_timeout', async (t) => {
  const r = await request(slow.tlsPort, { ca: pki.caCert, path: '/slow?ms=5000' });
  t.equal(r.status, 504);
  t.match(r.body.toString(), /did not answer in time/);
  t.ok(metricValue(await slow.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'response_timeout' }) >= 1);
});

t.test('a fast request after a 504 is unaffected', async (t) => {
  const r = await request(slow.tlsPort, { ca: pki.caCert, path: '/slow?ms=10' });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'slow\n');
});

/** Send a raw HTTP/1.1 request head over TLS; resolves with everything received until the sidecar closes. */
function rawTls(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(pki.caCert) }, () => s.write(head));
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('close', () => resolve(data));
    s.on('error', reject);
  });
}

/** The ws/http1 request counters of the `slow` sidecar by status class, polled until `changed` says so (close-time counting). */
async function requestCount(protocol: string, statusClass: string): Promise<number> {
  return metricValue(await slow.metrics(), 'ktls_sidecar_http_requests_total', { protocol, status_class: statusClass });
}
async function untilCount(protocol: string, statusClass: string, above: number): Promise<number> {
  let n = await requestCount(protocol, statusClass);
  for (let i = 0; i < 40 && n <= above; i++) {
    await new Promise((r) => setTimeout(r, 50));
    n = await requestCount(protocol, statusClass);
  }
  return n;
}

t.test('a WebSocket upgrade the upstream refuses is relayed and counted with its real status, not 1xx', async (t) => {
  const [before4xx, before1xx] = [await requestCount('ws', '4xx'), await requestCount('ws', '1xx')];
  // No Sec-WebSocket-Key: the upstream's WebSocket server answers 400.
  const answer = await rawTls(slow.tlsPort, 'GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n');
  t.match(answer, /^HTTP\/1\.1 400 /, 'the refusal reaches the client');
  t.equal(await untilCount('ws', '4xx', before4xx), before4xx + 1, 'counted as 4xx');
  t.equal(await requestCount('ws', '1xx'), before1xx, 'not counted as 1xx');
});

t.test('an h2c upgrade is served as the plain HTTP/1.1 request it also is, counted with its real status', async (t) => {
  const [before2xx, before1xx] = [await requestCount('http1', '2xx'), await requestCount('ws', '1xx')];
  const answer = await rawTls(
    slow.tlsPort,
    'GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
  );
  t.match(answer, /^HTTP\/1\.1 200 /, 'the upstream answer reaches the client (Upgrade ignored, RFC 9110 §7.8)');
  const seen = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
  t.equal(seen.upgrade, undefined, 'the upstream saw no Upgrade');
  t.equal(seen['http2-settings'], undefined, 'nor the header Connection named');
  t.equal(await untilCount('http1', '2xx', before2xx), before2xx + 1, 'counted as a 2xx request');
  t.equal(await requestCount('ws', '1xx'), before1xx, 'not counted as 1xx');
});
