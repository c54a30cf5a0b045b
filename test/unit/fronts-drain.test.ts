// The fronts' kTLS drain hooks (KtlsDrainTarget returned by handle()), with
// real clients over plain TCP: the fronts only see a Duplex, so a net.Socket
// stands in for the decrypted stream. What each hook promises is in
// proxy/fronts/http.ts (top) and proxy/ktls/drain.ts.
import t from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import WebSocket from 'ws';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { createKtlsFlag } from '../../proxy/ktls/flag.js';
import { HttpFront } from '../../proxy/fronts/http.js';
import { TcpFront } from '../../proxy/fronts/tcp.js';
import { KtlsConnectionRegistry, attachDrainToFlag } from '../../proxy/ktls/drain.js';
import type { KtlsDrainTarget } from '../../proxy/ktls/drain.js';
import { factsFor } from '../helpers/facts.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import type { Teardown } from '../helpers/teardown.js';

interface Harness {
  port: number;
  /** Drain targets, in accept order. */
  targets: KtlsDrainTarget[];
  /** The first accepted connection's target (each test opens one). */
  nextTarget(): Promise<KtlsDrainTarget>;
}

/** A listener that feeds every accepted socket to `handle` and keeps the returned drain target. */
async function listen(t: Teardown, handle: (s: net.Socket) => KtlsDrainTarget): Promise<Harness> {
  const targets: KtlsDrainTarget[] = [];
  const waiting: Array<(x: KtlsDrainTarget) => void> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    const target = handle(s);
    targets.push(target);
    waiting.shift()?.(target);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    targets,
    nextTarget: () =>
      new Promise((resolve) => {
        const have = targets[0];
        if (have) resolve(have);
        else waiting.push(resolve);
      }),
  };
}

/** An HttpFront to a fresh test upstream, both closed at teardown. */
async function newHttpFront(t: Teardown): Promise<{ front: HttpFront; upstream: Awaited<ReturnType<typeof startUpstream>> }> {
  const upstream = await startUpstream();
  const front = new HttpFront({
    upstreamUrl: upstream.url,
    clientCertHeader: '',
    maxHeaderSize: 16384,
    timeouts: { headers: 10_000, idle: 30_000, upstreamConnect: 5000, upstreamResponse: 30_000, requestBody: 300_000 },
    upstream: { maxSockets: 1024, maxPending: 1024 },
    limits: { maxConcurrentStreams: 100, minRequestBodyRate: 1024 },
    metrics: createMetrics({ defaultMetrics: false }),
  });
  t.teardown(async () => {
    front.close();
    await upstream.close();
  });
  return { front, upstream };
}

async function httpFront(t: Teardown, alpn = ''): Promise<{ h: Harness; upstream: Awaited<ReturnType<typeof startUpstream>> }> {
  const { front, upstream } = await newHttpFront(t);
  const h = await listen(t, (s) => front.handle(s, factsFor(s, { alpn, ktls: 'on' })));
  return { h, upstream };
}

/** Wait until `pred` holds (polling; the tests assert on what happens, not on when). */
async function until(pred: () => boolean): Promise<void> {
  while (!pred()) await new Promise((r) => setTimeout(r, 10));
}

function get(agent: http.Agent, port: number, path: string, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent, method: body ? 'POST' : 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), socket: res.socket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('http1: the in-flight response completes with Connection: close, then the connection ends', async (t) => {
  const { h, upstream } = await httpFront(t);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const pending = get(agent, h.port, '/slow?ms=300');
  const target = await h.nextTarget();
  await until(() => upstream.seen.some((r) => r.url.startsWith('/slow')));
  t.equal(target.protocol, 'http1');
  target.requestDrain?.();
  const res = await pending;
  t.equal(res.status, 200);
  t.equal(res.body.toString(), 'slow\n', 'the response was not lost');
  t.equal(res.headers.connection, 'close');
  if (!res.socket.destroyed) await once(res.socket, 'close');
  t.pass('connection closed after the response');
});

t.test('http1: an idle keep-alive connection is closed at once', async (t) => {
  const { h } = await httpFront(t);
  const sock = net.connect(h.port, '127.0.0.1');
  await once(sock, 'connect');
  sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString()));
  await until(() => got.includes('ok\n'));
  t.match(got, /^HTTP\/1\.1 200/);
  t.match(got, /keep-alive/i, 'first answer kept the connection');
  const target = await h.nextTarget();
  target.requestDrain?.();
  await once(sock, 'end');
  t.pass('server ended the idle connection');
  sock.destroy();
});

t.test('http1: a response whose head already went out keep-alive completes byte-exact, then the connection ends', async (t) => {
  const { h } = await httpFront(t);
  const body = patternBytes(256 * 1024, 3);
  const sock = net.connect(h.port, '127.0.0.1');
  await once(sock, 'connect');
  sock.write(`POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
  sock.write(body.subarray(0, 1024));
  let raw = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (raw = Buffer.concat([raw, d])));
  // /echo writes its head as soon as the request arrives: wait for it, then drain.
  await until(() => raw.includes('\r\n\r\n'));
  t.notMatch(raw.subarray(0, raw.indexOf('\r\n\r\n')).toString(), /connection: close/i);
  const target = await h.nextTarget();
  target.requestDrain?.();
  sock.write(body.subarray(1024));
  await once(sock, 'end');
  const head = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString();
  t.match(head, /transfer-encoding: chunked/i);
  // De-chunk the body.
  let rest = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
  const parts: Buffer[] = [];
  for (;;) {
    const eol = rest.indexOf('\r\n');
    const n = parseInt(rest.subarray(0, eol).toString(), 16);
    if (!n) break;
    parts.push(rest.subarray(eol + 2, eol + 2 + n));
    rest = rest.subarray(eol + 2 + n + 2);
  }
  t.equal(sha256(Buffer.concat(parts)), sha256(body), 'echoed body byte-exact');
  sock.destroy();
});

t.test('h2: drain sends GOAWAY, the open stream finishes, the session closes', async (t) => {
  const { h, upstream } = await httpFront(t, 'h2');
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  let goaway = false;
  session.on('goaway', () => (goaway = true));
  const req = session.request({ ':path': '/slow?ms=300' });
  req.end();
  let status = 0;
  let body = '';
  req.on('response', (hd) => (status = Number(hd[':status'])));
  req.on('data', (d: Buffer) => (body += d.toString()));
  const target = await h.nextTarget();
  t.equal(target.protocol, 'h2');
  await until(() => upstream.seen.some((r) => r.url.startsWith('/slow')));
  target.requestDrain?.();
  await once(req, 'end');
  t.equal(status, 200);
  t.equal(body, 'slow\n', 'the open stream completed');
  if (!session.closed) await once(session, 'close');
  t.ok(goaway, 'client saw GOAWAY');
});

t.test('websocket: once upgraded the target is tcp-like and drain ends the connection', async (t) => {
  const { h } = await httpFront(t);
  const ws = new WebSocket(`ws://127.0.0.1:${h.port}/`);
  ws.on('error', () => undefined);
  t.teardown(() => ws.terminate());
  await once(ws, 'open');
  ws.send('hi');
  const [msg] = (await once(ws, 'message')) as [Buffer];
  t.equal(msg.toString(), 'echo:hi');
  const target = await h.nextTarget();
  t.equal(target.protocol, 'tcp');
  target.requestDrain?.();
  await once(ws, 'close');
  t.pass('websocket closed by the drain');
});

t.test('tcp: drain ends the connection after the data already forwarded; close() is idempotent', async (t) => {
  const up = await startTcpUpstream(false);
  t.teardown(() => up.close());
  const front = new TcpFront({
    upstreamAddress: `127.0.0.1:${up.port}`,
    proxyProtocol: 'off',
    upstreamConnectMs: 5000,
    idleMs: 0,
    metrics: createMetrics({ defaultMetrics: false }),
  });
  const h = await listen(t, (s) => front.handle(s, factsFor(s, { ktls: 'on' })));
  const sock = net.connect({ port: h.port, host: '127.0.0.1', allowHalfOpen: true });
  await once(sock, 'connect');
  const data = patternBytes(64 * 1024, 5);
  let got = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  sock.write(data);
  await until(() => got.length >= data.length);
  const target = await h.nextTarget();
  t.equal(target.protocol, 'tcp');
  target.requestDrain?.();
  await once(sock, 'end');
  t.equal(sha256(got), sha256(data), 'everything echoed before the drain arrived, nothing after');
  sock.end();
  target.close();
  target.close();
  t.pass('close twice does not throw');
});

t.test('tcp with drainOnDisable keep: the flag flip leaves the connection working', async (t) => {
  const up = await startTcpUpstream(false);
  t.teardown(() => up.close());
  const front = new TcpFront({ upstreamAddress: `127.0.0.1:${up.port}`, proxyProtocol: 'off', upstreamConnectMs: 5000, idleMs: 0, metrics: createMetrics({ defaultMetrics: false }) });
  const registry = new KtlsConnectionRegistry();
  const flag = createKtlsFlag({ enabled: true });
  attachDrainToFlag(flag, registry, () => ({ drainOnDisable: 'keep', drainTimeout: 50 }));
  const h = await listen(t, (s) => {
    const target = front.handle(s, factsFor(s, { ktls: 'on' }));
    registry.track(s, target);
    return target;
  });
  const sock = net.connect({ port: h.port, host: '127.0.0.1' });
  t.teardown(() => sock.destroy());
  await once(sock, 'connect');
  await h.nextTarget();
  flag.set(false, 'admin');
  // Well past drainTimeout: a kept connection must still echo.
  await new Promise((r) => setTimeout(r, 200));
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString()));
  sock.write('still-here');
  await until(() => got.includes('still-here'));
  t.equal(registry.size, 1, 'still registered');
});

t.test('drainTarget() asked before handle() (the pipeline order) is the same hook and works', async (t) => {
  const { front } = await newHttpFront(t);
  const same: boolean[] = [];
  const h = await listen(t, (s) => {
    const early = front.drainTarget(s, 'h2');
    const fromHandle = front.handle(s, factsFor(s, { alpn: 'h2', ktls: 'on' }));
    same.push(early === fromHandle);
    return early;
  });
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  const req = session.request({ ':path': '/' });
  req.resume();
  req.end();
  await once(req, 'end');
  const target = await h.nextTarget();
  t.same(same, [true], 'handle() returned the hook made before it');
  t.equal(target.protocol, 'h2');
  target.requestDrain?.();
  if (!session.closed) await once(session, 'close');
  t.pass('session closed after GOAWAY with no open stream');
});
