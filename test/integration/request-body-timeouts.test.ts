// Slow request bodies hold an upstream connection each: timeouts.requestBody
// bounds a whole body and limits.minRequestBodyRate its rate per window after
// the first. Past either: 408 if no response head went out yet, else the
// response is cut; the upstream request is aborted; the request counts as 408.
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import type { HttpProtocol, KtlsState } from '../../proxy/vocabulary.js';
import { Forwarder } from '../../proxy/fronts/forward.js';
import { factsFor } from '../helpers/facts.js';
import { metricValue } from '../helpers/metrics.js';
import { startStand } from '../helpers/stand.js';
import { patternBytes, startUpstream } from '../helpers/upstream.js';

const { pki, up, sc } = await startStand(t, startUpstream, ['--timeouts-request-body', '1s', '--timeouts-idle', '30s']);
const ca = fs.readFileSync(pki.caCert);

/** Well under the 30 s idle timeout (a correctness bound, not a speed check). */
const PROMPT_MS = 5000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const requests4xx = async (protocol: string): Promise<number> =>
  metricValue(await sc.metrics(), 'ktls_sidecar_http_requests_total', { protocol, status_class: '4xx' });
const upstreamErrors = async (): Promise<number> => metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total');

interface Outcome {
  status: number;
  body: string;
  connection: string | undefined;
  /** The response ended incomplete (cut). */
  cut: boolean;
}

/** An HTTP/1.1 request announcing `length` body bytes, of which only `send` are sent. */
function stalledPost(port: number, path: string, length: number, send: number, o: { ca?: Buffer } = {}): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-length': String(length) }, agent: false as const };
    const onRes = (res: http.IncomingMessage): void => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection, cut: false }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection, cut: true }));
    };
    const req = o.ca ? https.request({ ...opts, servername: 'localhost', ca: o.ca }, onRes) : http.request(opts, onRes);
    req.on('error', reject);
    req.write(patternBytes(send, 2));
  });
}

t.test('HTTP/1.1: a body not complete within timeouts.requestBody gets 408, connection closed', async (t) => {
  const [before, errorsBefore] = [await requests4xx('http1'), await upstreamErrors()];
  const started = performance.now();
  const r = await stalledPost(sc.tlsPort, '/sha', 1000, 10, { ca });
  t.ok(performance.now() - started < PROMPT_MS, 'answered well before the idle timeout');
  t.equal(r.status, 408);
  t.match(r.body, /request body too slow/);
  t.equal(r.connection, 'close');
  t.equal(await requests4xx('http1'), before + 1, 'counted as a 4xx request');
  t.equal(await upstreamErrors(), errorsBefore, 'not blamed on the upstream');
});

t.test('HTTP/1.1: once the response head is out, a stalled body cuts the response, still counted as 4xx', async (t) => {
  const before = await requests4xx('http1');
  const started = performance.now();
  // /echo answers as the body arrives: the head is out before the deadline.
  const r = await stalledPost(sc.tlsPort, '/echo', 1000, 50, { ca });
  t.ok(performance.now() - started < PROMPT_MS, 'cut well before the idle timeout');
  t.equal(r.status, 200, 'the head had gone out');
  t.ok(r.cut, 'the response is cut, not ended');
  t.equal(await requests4xx('http1'), before + 1, 'counted as 408');
});

t.test('HTTP/2: a body not complete within timeouts.requestBody gets 408, then the stream ends', async (t) => {
  const before = await requests4xx('h2');
  const client = http2.connect(`https://localhost:${sc.tlsPort}`, { ca });
  t.teardown(() => client.close());
  const started = performance.now();
  const r = await new Promise<{ status: number; body: string }>((resolve) => {
    const req = client.request({ ':method': 'POST', ':path': '/sha', 'content-length': '1000' });
    let status = 0;
    let body = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('error', () => undefined);
    req.on('close', () => resolve({ status, body }));
    req.write(patternBytes(10, 2));
  });
  t.ok(performance.now() - started < PROMPT_MS, 'answered well before the idle timeout');
  t.equal(r.status, 408);
  t.match(r.body, /request body too slow/);
  t.notOk(client.destroyed, 'the session lives on');
  t.equal(await requests4xx('h2'), before + 1, 'counted as a 4xx request');
});

// limits.minRequestBodyRate, on a Forwarder in this process so the 10 s window can be 300 ms.
const counted: Array<{ protocol: HttpProtocol; status: number; ktls: KtlsState }> = [];
const forwarder = new Forwarder({
  upstreamUrl: up.url,
  clientCertHeader: 'x-forwarded-client-cert',
  upstreamConnectMs: 5000,
  upstreamResponseMs: 30_000,
  requestBodyMs: 0,
  minRequestBodyRate: 1000,
  maxSockets: 16,
  maxPending: 16,
  bodyRateWindowMs: 300,
  metrics: { httpRequest: (f) => counted.push(f), upstreamError: () => undefined, internalError: () => undefined },
});
const front = http.createServer((req, res) => forwarder.web(req, res, factsFor(req.socket)));
await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
t.teardown(() => {
  forwarder.close();
  front.closeAllConnections();
  front.close();
});
const frontPort = (front.address() as AddressInfo).port;

/** POST `total` bytes in `step`-byte pieces every 100 ms. */
function tricklePost(total: number, step: number): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: frontPort, method: 'POST', path: '/sha', headers: { 'content-length': String(total) }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection, cut: false }));
    });
    req.on('error', reject);
    let sent = 0;
    const tick = async (): Promise<void> => {
      while (sent < total && !req.destroyed) {
        const n = Math.min(step, total - sent);
        req.write(patternBytes(n, sent));
        sent += n;
        await sleep(100);
      }
      if (!req.destroyed) req.end();
    };
    void tick();
  });
}

t.test('a body slower than limits.minRequestBodyRate (after the first window) gets 408', async (t) => {
  const before = counted.length;
  // 20 bytes per 100 ms = 200 B/s, a fifth of the minimum; the whole body would take 20 s.
  const r = await tricklePost(4000, 20);
  t.equal(r.status, 408);
  t.match(r.body, /request body too slow/);
  t.same(counted.slice(before).map((c) => c.status), [408], 'counted as 408');
});

t.test('a body at the minimum rate or faster passes, however long it takes', async (t) => {
  // 200 bytes per 100 ms = 2000 B/s for ~1.2 s: four windows.
  const r = await tricklePost(2400, 200);
  t.equal(r.status, 200);
  t.equal((JSON.parse(r.body) as { length: number }).length, 2400);
});
