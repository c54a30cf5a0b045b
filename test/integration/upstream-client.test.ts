// The sidecar's upstream client (proxy/upstream/) against scripted raw
// upstreams: keep-alive reuse and when a socket is NOT reused, response
// framings, 1xx, HEAD, strict heads, request bodies framed by us, deadlines,
// and the keep-alive race reported as such.
import net from 'node:net';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import { Exchange, type ExchangeFailure } from '../../proxy/upstream/exchange.js';
import { IDLE_MS, UpstreamPool, parseTarget } from '../../proxy/upstream/pool.js';
import type { ResponseHead } from '../../proxy/upstream/response-head.js';
import { Tunnel } from '../../proxy/upstream/tunnel.js';

interface Outcome {
  head: ResponseHead | undefined;
  body: string;
  failure: ExchangeFailure | undefined;
}

class Probe extends Exchange {
  head: ResponseHead | undefined;
  chunks: Buffer[] = [];
  done: Promise<Outcome>;
  private settle!: (o: Outcome) => void;
  constructor(pool: UpstreamPool) {
    super(pool);
    this.done = new Promise((r) => (this.settle = r));
  }
  go(head: string, body?: PassThrough, chunked = false, headRequest = false): Promise<Outcome> {
    this.send(head, body, chunked, headRequest, false);
    return this.done;
  }
  get socket(): net.Socket | undefined {
    return this.upstream?.socket;
  }
  protected onHead(head: ResponseHead): void {
    this.head = head;
  }
  protected onBody(chunk: Buffer): void {
    this.chunks.push(Buffer.from(chunk));
  }
  protected onComplete(last: Buffer | undefined): void {
    if (last) this.chunks.push(Buffer.from(last));
    this.settle({ head: this.head, body: Buffer.concat(this.chunks).toString(), failure: undefined });
  }
  protected onFailure(failure: ExchangeFailure): void {
    this.settle({ head: this.head, body: Buffer.concat(this.chunks).toString(), failure });
  }
}

/** A raw upstream: `answer(request text, connection index, request index on it)` returns what to write, or a function to act. */
async function upstream(
  t: Test,
  answer: (req: string, conn: number, n: number, sock: net.Socket) => string | undefined,
): Promise<{ url: string; connections: () => number; received: string[]; closed: () => number }> {
  let connections = 0;
  let closed = 0;
  const received: string[] = [];
  const server = net.createServer((c) => {
    const conn = connections++;
    let n = 0;
    let buf = '';
    c.on('error', () => undefined);
    c.on('close', () => closed++);
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end + 4);
        let total = end + 4;
        const cl = /\r\ncontent-length: (\d+)/i.exec(head);
        if (cl) total += Number(cl[1]);
        else if (/\r\ntransfer-encoding: chunked/i.test(head)) {
          const fin = buf.indexOf('0\r\n\r\n', end + 4);
          if (fin === -1) return;
          total = fin + 5;
        }
        if (buf.length < total) return;
        const req = buf.slice(0, total);
        buf = buf.slice(total);
        received.push(req);
        const out = answer(req, conn, n++, c);
        if (out !== undefined) c.write(out);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections: () => connections, received, closed: () => closed };
}

function pool(t: Test, url: string, responseMs = 0): UpstreamPool {
  const p = new UpstreamPool(parseTarget(url), { connectMs: 1000, responseMs });
  t.teardown(() => p.close());
  return p;
}

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('keep-alive: a complete response returns the socket, the next request reuses it', async (t) => {
  const up = await upstream(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  const p = pool(t, up.url);
  const a = await new Probe(p).go(GET('/a'));
  const b = await new Probe(p).go(GET('/b'));
  t.equal(a.body, 'ok');
  t.equal(b.body, 'ok');
  t.equal(up.connections(), 1);
  t.equal(p.size, 1);
});

t.test('Connection: close, bytes past the body, a body to the close: the socket is not reused', async (t) => {
  const answers = [
    'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na',
    'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbEXTRA',
    'HTTP/1.1 200 OK\r\n\r\nuntil close',
    'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd',
  ];
  const up = await upstream(t, (_r, conn, _n, sock) => {
    const out = answers[conn] ?? '';
    if (conn === 2) {
      sock.end(out);
      return undefined;
    }
    return out;
  });
  const p = pool(t, up.url);
  t.equal((await new Probe(p).go(GET('/1'))).body, 'a');
  t.equal((await new Probe(p).go(GET('/2'))).body, 'b', 'the body stops at its length');
  const third = await new Probe(p).go(GET('/3'));
  t.equal(third.body, 'until close', 'complete at the FIN');
  t.equal((await new Probe(p).go(GET('/4'))).body, 'd');
  t.equal(up.connections(), 4, 'a new connection each time');
});

t.test('chunked bodies are decoded, trailers dropped, and the socket reused', async (t) => {
  const up = await upstream(t, () => 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n');
  const p = pool(t, up.url);
  const a = await new Probe(p).go(GET('/a'));
  t.equal(a.body, 'abcde');
  t.same(a.head?.headers, []);
  t.equal((await new Probe(p).go(GET('/b'))).body, 'abcde');
  t.equal(up.connections(), 1);
});

t.test('1xx heads are skipped; HEAD, 204 and 304 have no body whatever their fields say', async (t) => {
  const up = await upstream(t, (req) => {
    if (req.startsWith('GET /continue')) return 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    if (req.startsWith('HEAD')) return 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n';
    if (req.startsWith('GET /204')) return 'HTTP/1.1 204 No Content\r\n\r\n';
    return 'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n';
  });
  const p = pool(t, up.url);
  const c = await new Probe(p).go(GET('/continue'));
  t.equal(c.head?.status, 200);
  t.equal(c.body, 'ok');
  const h = await new Probe(p).go('HEAD / HTTP/1.1\r\nHost: x\r\n\r\n', undefined, false, true);
  t.equal(h.head?.status, 200);
  t.equal(h.body, '');
  t.equal((await new Probe(p).go(GET('/204'))).head?.status, 204);
  t.equal((await new Probe(p).go(GET('/304'))).head?.status, 304);
  t.equal(up.connections(), 1, 'all on one connection');
});

t.test('a malformed head fails the exchange (protocol code) and drops the socket', async (t) => {
  const up = await upstream(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx');
  const p = pool(t, up.url);
  const r = await new Probe(p).go(GET('/'));
  t.equal(r.failure?.err.code, 'HPE_UNEXPECTED_CONTENT_LENGTH');
  t.equal(r.failure?.staleSocket, false);
  await tick();
  t.equal(p.size, 0);
});

t.test('a 101 nobody asked for is a protocol error', async (t) => {
  const up = await upstream(t, () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n');
  const r = await new Probe(pool(t, up.url)).go(GET('/'));
  t.equal(r.failure?.err.code, 'HPE_INVALID_STATUS');
});

t.test('request bodies: chunk-framed by us, or as their Content-Length says', async (t) => {
  const up = await upstream(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
  const p = pool(t, up.url);
  const body = new PassThrough();
  const done = new Probe(p).go('POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', body, true);
  body.write('hello');
  await tick();
  body.end(' world');
  await done;
  const sent = up.received[0] ?? '';
  t.equal(sent.slice(sent.indexOf('\r\n\r\n') + 4), '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n', 'chunks and the final chunk');
  const fixed = new PassThrough();
  const d2 = new Probe(p).go('POST /l HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n', fixed);
  fixed.end('abcd');
  await d2;
  t.match(up.received[1], /\r\n\r\nabcd$/);
  t.equal(up.connections(), 1, 'reused after both the body and the response completed');
});

t.test('a response that completes before the request body: the socket is dropped, the body no longer read into it', async (t) => {
  const up = await upstream(t, () => undefined);
  // Answer as soon as the head is in (an early 413).
  const server = net.createServer((c) => {
    c.on('error', () => undefined);
    c.once('data', () => c.write('HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  void up;
  const p = pool(t, `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  const body = new PassThrough();
  const probe = new Probe(p);
  const done = probe.go('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n', body);
  body.write('part');
  const r = await done;
  t.equal(r.head?.status, 413);
  await tick();
  t.equal(p.size, 0, 'not back in the pool');
  t.equal(body.listenerCount('data'), 0, 'the body is detached');
});

t.test('the response deadline fails the exchange as a response timeout', async (t) => {
  const up = await upstream(t, () => undefined);
  const r = await new Probe(pool(t, up.url, 100)).go(GET('/slow'));
  t.equal(r.failure?.timedOut, 'response');
});

t.test('the deadline is per request: a reused socket does not inherit an earlier start', async (t) => {
  let n = 0;
  const up = await upstream(t, (_req, _c, _i, sock) => {
    n++;
    // The second answer comes 80 ms after its request: inside its own 120 ms.
    if (n === 2) setTimeout(() => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'), 80);
    else return 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
    return undefined;
  });
  const p = pool(t, up.url, 120);
  await new Probe(p).go(GET('/1'));
  await tick(80);
  const r = await new Probe(p).go(GET('/2'));
  t.equal(r.failure, undefined);
  t.equal(r.head?.status, 200);
});

t.test('a reused socket reset before any response byte is reported stale (the keep-alive race)', async (t) => {
  const up = await upstream(t, (_r, _c, n, sock) => {
    if (n > 0) {
      sock.resetAndDestroy();
      return undefined;
    }
    return 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
  });
  const p = pool(t, up.url);
  await new Probe(p).go(GET('/1'));
  const r = await new Probe(p).go(GET('/2'));
  t.equal(r.failure?.staleSocket, true);
  t.equal(r.failure?.err.code, 'ECONNRESET');
  const fresh = await upstream(t, (_r, _c, _n, sock) => {
    sock.resetAndDestroy();
    return undefined;
  });
  const r2 = await new Probe(pool(t, fresh.url)).go(GET('/1'));
  t.equal(r2.failure?.staleSocket, false, 'a new socket is not stale');
});

t.test('an idle socket older than IDLE_MS is not handed out; the upstream closing an idle one removes it', async (t) => {
  const up = await upstream(t, (_r, conn, _n, sock) => {
    if (conn === 1) {
      sock.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
      return undefined;
    }
    return 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
  });
  const p = pool(t, up.url);
  const probe = new Probe(p);
  await probe.go(GET('/1'));
  // Age the idle socket past IDLE_MS without waiting for it.
  const idle = (p as unknown as { idleSockets: { idleSince: number }[] }).idleSockets;
  t.equal(idle.length, 1);
  (idle[0] as { idleSince: number }).idleSince -= IDLE_MS;
  await new Probe(p).go(GET('/2'));
  t.equal(up.connections(), 2, 'the aged socket was dropped, a new one made');
  await tick(50);
  t.equal(p.size, 0, 'the second one closed by the upstream while idle is gone');
});

/** Two ends of a loopback TCP connection: `ours` stands for the client connection the front hands over. */
async function socketPair(t: Test): Promise<{ ours: net.Socket; peer: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const ours = await accepted;
  t.teardown(() => {
    ours.destroy();
    peer.destroy();
  });
  return { ours, peer };
}

const collect = (s: net.Socket): (() => string) => {
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  return () => got;
};

t.test('tunnel: on 101 the head and early bytes go to the client, then bytes flow both ways', async (t) => {
  const up = await upstream(t, (_req, _c, _n, sock) => {
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\nEARLY');
    sock.removeAllListeners('data');
    sock.on('data', (d: Buffer) => sock.write(`echo:${d.toString()}`));
    return undefined;
  });
  const { ours, peer } = await socketPair(t);
  const got = collect(peer);
  const events: unknown[] = [];
  const tunnel = new Tunnel(pool(t, up.url), ours, Buffer.from('HELLO'), true, {
    answered: (s) => events.push(s),
    failed: (f) => events.push(f.err.code),
    done: () => events.push('done'),
  });
  tunnel.open('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  await tick(100);
  peer.write('ping');
  await tick(100);
  t.match(got(), /^HTTP\/1\.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLYecho:HELLO(echo:ping)?/);
  t.match(got(), /echo:ping/);
  t.same(events, [101]);
});

t.test('tunnel: any other answer is relayed, re-framed chunked, and the connection ends', async (t) => {
  const up = await upstream(t, (_req, _c, _n, sock) => {
    sock.end('HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno ws here');
    return undefined;
  });
  const { ours, peer } = await socketPair(t);
  const got = collect(peer);
  const events: unknown[] = [];
  const tunnel = new Tunnel(pool(t, up.url), ours, Buffer.alloc(0), true, {
    answered: (s) => events.push(s),
    failed: (f) => events.push(f.err.code),
    done: () => {
      events.push('done');
      ours.end();
    },
  });
  tunnel.open('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  await new Promise((r) => peer.once('end', r));
  t.equal(got(), 'HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\na\r\nno ws here\r\n0\r\n\r\n');
  t.same(events, [404, 'done']);
});
