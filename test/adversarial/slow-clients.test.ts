// Slow clients: a slowloris trickling header bytes (HTTP/1.1) or never ending
// its header block (HTTP/2), a body slower than timeouts.requestBody allows
// or below limits.minRequestBodyRate, and a client that never reads a 16 MiB
// response. Each is cut by the limit meant for it — well before the idle
// timeout where that one is long — with the upstream request aborted.
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type RunningSidecar, startSidecar } from '../helpers/sidecar.js';
import { FRAME, frame, rawH2, requestBlock, firstStatus, tlsExchange } from './helpers/raw.js';
import { startRecordingUpstream } from './helpers/recording-upstream.js';
import { activeConnections, checkRecovered, eventually, mib, RSS_SLACK_BYTES, usage, type Usage, warmBaseline } from './helpers/resources.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const ca = pki.caCert;
const common = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url];
// `timed`: short header and body deadlines under a long idle timeout, so a cut
// by the idle timeout cannot pass for the right one. `rated`: no total body
// deadline, only the minimum rate; a short idle timeout for the reader that
// never reads (a trickling body is activity, so idle never cuts it).
const [timed, rated] = await Promise.all([
  startSidecar([...common, '--timeouts-headers', '1s', '--timeouts-idle', '10s', '--timeouts-request-body', '3s']),
  startSidecar([...common, '--timeouts-request-body', '0', '--limits-min-request-body-rate', '1024', '--timeouts-idle', '3s']),
]);
t.teardown(() => Promise.all([timed.stop(), rated.stop()]));
const bases = new Map<RunningSidecar, Usage>();
t.before(async () => {
  // One after the other: both warm-ups wait for the shared upstream's pool to empty.
  bases.set(timed, await warmBaseline(timed, ca, up));
  bases.set(rated, await warmBaseline(rated, ca, up));
});

const pause = (ms: number, n: number, bytes: string): Array<string | number> => [...bytes.slice(0, n)].flatMap((c) => [c, ms]);

t.test('slowloris: header bytes trickled every 200 ms still get 408 at timeouts.headers (1 s)', async (t) => {
  const before = metricValue(await timed.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'headers_timeout' });
  const started = Date.now();
  const trickle = 'GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
  const ex = await tlsExchange(timed.tlsPort, ca, pause(200, 40, trickle), { maxMs: 9000, quietMs: 2000 });
  const took = Date.now() - started;
  t.equal(firstStatus(ex.data), 408, '408 Request Timeout');
  t.ok(ex.closed, 'and the connection closed');
  t.ok(took < 4000, `cut after ${took} ms: by timeouts.headers, not the trickle's end (8 s) or timeouts.idle (10 s)`);
  const after = metricValue(await timed.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'headers_timeout' });
  t.equal(after - before, 1, 'counted once as headers_timeout');
});

t.test('HTTP/2: a header block that never ends (no END_HEADERS) is cut at timeouts.headers, not timeouts.idle', async (t) => {
  const h2 = await rawH2(timed.tlsPort, ca);
  t.teardown(() => h2.socket.destroy());
  const started = Date.now();
  h2.write(frame(FRAME.HEADERS, 0, 1, requestBlock('/never-ends')));
  const cut = await eventually(() => h2.isClosed() || h2.goaway !== undefined || h2.resets.has(1), 6000);
  const took = Date.now() - started;
  t.ok(cut, `the stream was reset or the session closed (goaway ${String(h2.goaway)}, resets ${JSON.stringify([...h2.resets])})`);
  t.ok(took < 4000, `after ${took} ms: timeouts.headers (1 s), well before timeouts.idle (10 s)`);
  t.equal(up.requests.filter((r) => r.target === '/never-ends').length, 0, 'nothing reached the upstream');
});

t.test('a body still arriving at timeouts.requestBody (3 s) gets 408 (or a reset) and the upstream request is aborted', async (t) => {
  const before = metricValue(await timed.metrics(), 'ktls_sidecar_http_requests_total', { protocol: 'http1', status_class: '4xx' });
  up.clear();
  const started = Date.now();
  const head = 'POST /slow-body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n';
  // 4 KiB every 500 ms: 8 KiB/s, above limits.minRequestBodyRate, so only the total deadline applies.
  const body: Array<string | number> = Array.from({ length: 20 }, () => ['x'.repeat(4096), 500]).flat();
  const ex = await tlsExchange(timed.tlsPort, ca, [head, ...body], { maxMs: 12_000, quietMs: 1000 });
  const took = Date.now() - started;
  const status = firstStatus(ex.data);
  t.ok(status === 408 || (status === 0 && ex.closed), `408 or reset (status ${status}, closed ${ex.closed})`);
  t.ok(took < 7000, `cut after ${took} ms (deadline 3 s; the body would take 10 s)`);
  t.equal(up.requests.length, 0, 'the upstream never got a complete request');
  t.ok(await eventually(() => up.open === 0, 3000), 'the upstream request was aborted (its connection closed)');
  if (status === 408) {
    const after = metricValue(await timed.metrics(), 'ktls_sidecar_http_requests_total', { protocol: 'http1', status_class: '4xx' });
    t.equal(after - before, 1, 'the 408 is counted as a request');
  }
});

t.test('a body below limits.minRequestBodyRate (20 B/s < 1024 B/s) gets 408 (or a reset) and the upstream request is aborted', async (t) => {
  up.clear();
  const head = 'POST /trickle HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n';
  const body: Array<string | number> = Array.from({ length: 80 }, () => ['xxxxxxxxxx', 500]).flat();
  const ex = await tlsExchange(rated.tlsPort, ca, [head, ...body], { maxMs: 35_000, quietMs: 1000 });
  const status = firstStatus(ex.data);
  // Rate windows are 10 s, the first is free: the cut comes at about 20 s, before the body's 40 s.
  t.ok(status === 408 || (status === 0 && ex.closed), `408 or reset (status ${status}, closed ${ex.closed})`);
  t.equal(up.requests.length, 0, 'the upstream never got a complete request');
  t.ok(await eventually(() => up.open === 0, 3000), 'the upstream request was aborted (its connection closed)');
});

t.test('a client that never reads a 16 MiB response: memory stays bounded, timeouts.idle (3 s) closes it', async (t) => {
  const pid = Number(rated.proc.pid);
  const base = bases.get(rated) as Usage;
  const s = tls.connect({ host: '127.0.0.1', port: rated.tlsPort, ca: fs.readFileSync(ca), servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  t.teardown(() => s.destroy());
  s.on('error', () => undefined);
  await new Promise((r) => s.once('secureConnect', r));
  s.pause(); // never read: the sidecar must stop reading the upstream when its writes back up
  s.write('GET /big?n=16777216 HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await eventually(() => up.requests.some((r) => r.target.startsWith('/big')), 3000);
  await new Promise((r) => setTimeout(r, 1500));
  const stalled = usage(pid);
  // Backpressure: with nobody reading, the sidecar stops reading the upstream,
  // so the upstream cannot hand the whole body to its kernel (measured: about
  // 8 MiB fit in the socket buffers on the way).
  t.ok(up.bigSent < 16 * 1024 * 1024, `the upstream could not push the whole body (${mib(up.bigSent)} MiB of 16 sent)`);
  t.ok(stalled.rssBytes <= base.rssBytes + RSS_SLACK_BYTES, `RSS while stalled ${mib(stalled.rssBytes)} MiB, baseline ${mib(base.rssBytes)} MiB`);
  t.ok(await eventually(async () => (await activeConnections(rated)) === 0, 8000), 'the sidecar closed the stalled connection');
  t.ok(await eventually(() => up.open === 0, 3000), 'and the upstream connection of its response');
});

checkRecovered(t, timed, () => bases.get(timed) as Usage, ca, { up });
checkRecovered(t, rated, () => bases.get(rated) as Usage, ca, { up });
