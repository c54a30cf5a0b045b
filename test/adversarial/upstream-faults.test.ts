// Upstream faults: refused (502), hanging (504 at timeouts.upstreamResponse),
// reset in the middle of a Content-Length body and a chunked body cut before
// its last chunk. The client's response is aborted at once — not left to the
// idle timeout (30 s here) — and every fault is counted.
import fs from 'node:fs';
import http2 from 'node:http2';
import tls from 'node:tls';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type RunningSidecar, startSidecar } from '../helpers/sidecar.js';
import { deadPort } from '../helpers/upstream.js';
import { tlsExchange } from './helpers/raw.js';
import { startRecordingUpstream } from './helpers/recording-upstream.js';
import { checkRecovered, eventually, type Usage, warmBaseline } from './helpers/resources.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const ca = pki.caCert;

const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--timeouts-idle', '30s'];
const [faulty, down] = await Promise.all([
  startSidecar([...certArgs, '--upstream-url', up.url, '--timeouts-upstream-response', '1s']),
  startSidecar([...certArgs, '--upstream-url', `http://127.0.0.1:${await deadPort()}`]),
]);
t.teardown(() => Promise.all([faulty.stop(), down.stop()]));
let base: Usage | undefined;
t.before(async () => {
  base = await warmBaseline(faulty, ca, up);
});

const upstreamErrors = async (sc: RunningSidecar, reason?: string): Promise<number> =>
  metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', reason ? { reason } : {});

t.test('upstream refuses connections → 502, counted connect_refused; the process survives', async (t) => {
  const before = await upstreamErrors(down, 'connect_refused');
  const r = await request(down.tlsPort, { ca });
  t.equal(r.status, 502);
  t.equal((await upstreamErrors(down, 'connect_refused')) - before, 1, 'counted once');
  t.equal(down.proc.exitCode, null, 'alive');
});

t.test('upstream accepts and never answers → 504 at timeouts.upstreamResponse (1 s), counted response_timeout; its connection closed', async (t) => {
  const before = await upstreamErrors(faulty, 'response_timeout');
  const started = Date.now();
  const r = await request(faulty.tlsPort, { ca, path: '/hang' });
  t.equal(r.status, 504);
  t.ok(Date.now() - started < 5000, 'answered at the deadline, not the idle timeout');
  t.equal((await upstreamErrors(faulty, 'response_timeout')) - before, 1, 'counted once');
  t.ok(await eventually(() => up.open === 0, 3000), 'the hanging upstream connection was closed');
});

t.test('HTTP/1.1: the client goes away while the upstream has not answered → the upstream request is aborted', async (t) => {
  up.clear();
  const s = tls.connect({ host: '127.0.0.1', port: faulty.tlsPort, ca: fs.readFileSync(ca), servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('secureConnect', r));
  s.write('GET /hang?gone=1 HTTP/1.1\r\nHost: localhost\r\n\r\n');
  t.ok(await eventually(() => up.requests.length === 1 && up.open === 1, 3000), 'the request reached the upstream');
  s.destroy();
  // Within timeouts.upstreamResponse (1 s) plus slack: a request whose client is gone holds no upstream socket.
  t.ok(await eventually(() => up.open === 0, 3000), `its upstream connection was closed (open: ${up.open})`);
});

t.test('HTTP/1.1: upstream resets in the middle of a Content-Length body → the client response is cut at once, counted', async (t) => {
  const before = await upstreamErrors(faulty);
  const started = Date.now();
  const ex = await tlsExchange(faulty.tlsPort, ca, ['GET /reset-mid-body HTTP/1.1\r\nHost: localhost\r\n\r\n'], { maxMs: 8000, quietMs: 8000 });
  const took = Date.now() - started;
  t.match(ex.data, /^HTTP\/1\.1 200 /, 'the head had gone out');
  t.ok(ex.closed, 'the connection was closed (the body can never complete)');
  t.ok(took < 5000, `closed after ${took} ms, not at the idle timeout (30 s)`);
  const body = ex.data.length - ex.data.indexOf('\r\n\r\n') - 4;
  t.ok(body < 1048576, `the client did not get a full body (${body} of 1048576 bytes)`);
  t.ok((await upstreamErrors(faulty)) - before >= 1, 'counted as an upstream error');
});

t.test('HTTP/1.1: upstream ends a chunked body before its last chunk → the client response is cut without the last chunk, counted', async (t) => {
  const before = await upstreamErrors(faulty);
  const started = Date.now();
  const ex = await tlsExchange(faulty.tlsPort, ca, ['GET /chunk-cut HTTP/1.1\r\nHost: localhost\r\n\r\n'], { maxMs: 8000, quietMs: 8000 });
  const took = Date.now() - started;
  t.match(ex.data, /^HTTP\/1\.1 200 /, 'the head had gone out');
  t.match(ex.data, /first-chunk-data/, 'the first chunk was relayed');
  t.notMatch(ex.data, /\r\n0\r\n\r\n$/, 'no last chunk: the client can tell the body is incomplete');
  t.ok(ex.closed, 'the connection was closed');
  t.ok(took < 5000, `closed after ${took} ms, not at the idle timeout (30 s)`);
  t.ok((await upstreamErrors(faulty)) - before >= 1, 'counted as an upstream error');
});

t.test('HTTP/2: upstream resets mid-body → that stream is reset at once, the session keeps serving', async (t) => {
  const before = await upstreamErrors(faulty);
  const client = http2.connect(`https://localhost:${faulty.tlsPort}`, { ca: fs.readFileSync(ca) });
  t.teardown(() => client.destroy());
  client.on('error', () => undefined);
  const started = Date.now();
  const outcome = await new Promise<{ ended: 'end' | 'error' | 'timeout'; bytes: number }>((resolve) => {
    const req = client.request({ ':path': '/reset-mid-body' });
    let bytes = 0;
    const timer = setTimeout(() => resolve({ ended: 'timeout', bytes }), 8000);
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => (clearTimeout(timer), resolve({ ended: 'end', bytes })));
    req.on('error', () => (clearTimeout(timer), resolve({ ended: 'error', bytes })));
    req.on('close', () => (clearTimeout(timer), resolve({ ended: req.rstCode ? 'error' : 'end', bytes })));
  });
  const took = Date.now() - started;
  t.equal(outcome.ended, 'error', `the stream was reset (${outcome.bytes} bytes received)`);
  t.ok(took < 5000, `after ${took} ms`);
  const next = await new Promise<number>((resolve, reject) => {
    const req = client.request({ ':path': '/' });
    req.on('response', (h) => resolve(Number(h[':status'])));
    req.on('error', reject);
    req.resume();
  });
  t.equal(next, 200, 'the same session serves the next request');
  t.ok((await upstreamErrors(faulty)) - before >= 1, 'counted as an upstream error');
});

checkRecovered(t, faulty, () => base as Usage, ca, { up });
