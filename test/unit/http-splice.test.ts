// HTTP/1.1 response bodies through the splice pump, the JS side
// (proxy/fronts/http-splice.ts, proxy/upstream/exchange.ts): which responses
// are spliced, and the exchange's hand-over on this host's real pump (plain
// loopback TCP, no kTLS needed): the body bytes read with the head are given
// to the relay, exactly the rest is moved from the upstream socket, and the
// socket goes back to the pool in step (the next response on it is exact);
// a splice stopped early hands the rest to JS; a failed one fails the
// exchange. The kTLS path end to end: test/kernel/sidecar-http-splice*.
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { createHash } from 'node:crypto';
import t, { type Test } from 'tap';
import { native, nativeStatus, socketFd } from '../../native/index.js';
import type { SpliceResult } from '../../native/index.js';
import { BodySplice, bodySpliceWanted } from '../../proxy/fronts/http-splice.js';
import { Exchange, type ExchangeFailure } from '../../proxy/upstream/exchange.js';
import { UpstreamPool, parseTarget } from '../../proxy/upstream/pool.js';
import type { ResponseHead } from '../../proxy/upstream/response-head.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';

t.test('which responses are spliced', (t) => {
  const base = { minBody: 65536, h2: false, method: 'GET', head: { status: 200, framing: 'length' as const, contentLength: 65536 } };
  t.ok(bodySpliceWanted(base), 'Content-Length at the threshold');
  t.notOk(bodySpliceWanted({ ...base, head: { ...base.head, contentLength: 65535 } }), 'threshold − 1');
  t.ok(bodySpliceWanted({ ...base, head: { ...base.head, contentLength: 2 ** 40 } }), 'large');
  t.notOk(bodySpliceWanted({ ...base, minBody: 0 }), 'spliceMinBody 0: never');
  t.notOk(bodySpliceWanted({ ...base, h2: true }), 'HTTP/2 client side: never');
  t.notOk(bodySpliceWanted({ ...base, method: 'HEAD' }), 'HEAD has no body');
  for (const status of [101, 204, 304]) t.notOk(bodySpliceWanted({ ...base, head: { ...base.head, status } }), `status ${status} has no body`);
  t.ok(bodySpliceWanted({ ...base, head: { ...base.head, status: 206 } }), '206 with a Content-Length');
  for (const framing of ['chunked', 'close', 'none'] as const) t.notOk(bodySpliceWanted({ ...base, head: { ...base.head, framing } }), `${framing} framing`);
  t.end();
});

const skip = nativeStatus().available ? false : 'native addon not built';

/** Where the pump writes: a loopback socket whose peer hashes what arrives. */
async function sink(t: Test): Promise<{ fd: number; got(n: number): Promise<{ bytes: number; sha: string }> }> {
  let resolveConn!: (s: net.Socket) => void;
  const conn = new Promise<net.Socket>((r) => (resolveConn = r));
  const server = net.createServer((s) => resolveConn(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const out = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  await new Promise((r) => out.once('connect', r));
  const peer = await conn;
  server.close();
  const h = createHash('sha256');
  let bytes = 0;
  let waiter: (() => void) | null = null;
  peer.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
    waiter?.();
  });
  t.teardown(() => {
    out.destroy();
    peer.destroy();
  });
  return {
    fd: socketFd(out)!,
    got: async (n) => {
      while (bytes < n) await new Promise<void>((r) => (waiter = r));
      return { bytes, sha: h.digest('hex') };
    },
  };
}

interface Plan {
  /** Bytes left to the pump, then given back: 0 = all, k = JS reads the last k. */
  giveBack?: number;
  /** End the splice with this error instead. */
  fail?: NodeJS.ErrnoException;
  /** The relay's threshold (default 64 KiB). */
  minBody?: number;
}

class SpliceProbe extends Exchange {
  rest: Buffer | null = null;
  lent = -1;
  js: Buffer[] = [];
  done: Promise<ExchangeFailure | undefined>;
  private settle!: (f: ExchangeFailure | undefined) => void;
  constructor(pool: UpstreamPool, private readonly toFd: number, private readonly plan: Plan) {
    super(pool);
    this.done = new Promise((r) => (this.settle = r));
  }
  go(path: string): this {
    this.send(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, undefined, false, false, false);
    return this;
  }
  protected override wantsSplice(head: ResponseHead): boolean {
    return head.contentLength >= (this.plan.minBody ?? 65536);
  }
  protected override spliceBody(rest: Buffer, left: number, socket: net.Socket): boolean {
    this.rest = Buffer.from(rest);
    this.lent = left;
    const back = this.plan.giveBack ?? 0;
    const pump = native().createSplicePump(socketFd(socket)!, this.toFd, (r: SpliceResult) => {
      pump.close();
      if (this.plan.fail) return this.bodySpliced({ err: this.plan.fail });
      this.bodySpliced({ left: left - r.bytes });
    });
    pump.start(left - back);
    return true;
  }
  protected onHead(): void {}
  protected onBody(chunk: Buffer): void {
    this.js.push(Buffer.from(chunk));
  }
  protected onComplete(last: Buffer | undefined): void {
    if (last) this.js.push(Buffer.from(last));
    this.settle(undefined);
  }
  protected onFailure(f: ExchangeFailure): void {
    this.settle(f);
  }
}

/** Origin: /N answers N pattern bytes; the head and the first `early` body bytes in one write, the rest 30 ms later. */
async function origin(t: Test, early: number): Promise<{ url: string; connections(): number }> {
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const n = Number(buf.slice(5, buf.indexOf(' ', 5)));
        buf = buf.slice(end + 4);
        const body = patternBytes(n, 3);
        const first = Math.min(early, n);
        s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\n\r\n`), body.subarray(0, first)]));
        setTimeout(() => s.write(body.subarray(first)), 30);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections: () => connections };
}

t.test('the exchange hands the rest of the body to the pump, then the socket goes back to the pool in step', { skip }, async (t) => {
  const up = await origin(t, 1000);
  const pool = new UpstreamPool(parseTarget(up.url), { connectMs: 2000, responseMs: 2000 });
  t.teardown(() => pool.close());
  const n = 300_000;
  const out = await sink(t);
  const p = new SpliceProbe(pool, out.fd, {}).go(`/${n}`);
  t.equal(await p.done, undefined, 'complete');
  t.equal(p.rest?.length, 1000, 'the body bytes read with the head go to the relay');
  t.equal(p.lent, n - 1000, 'exactly the rest is lent');
  t.same(p.js, [], 'no body byte through onBody');
  const got = await out.got(n - 1000);
  t.equal(got.bytes, n - 1000, 'the pump moved exactly the rest');
  t.equal(sha256(Buffer.concat([p.rest!, patternBytes(n, 3).subarray(1000)])), sha256(patternBytes(n, 3)));
  t.equal(got.sha, sha256(patternBytes(n, 3).subarray(1000)), 'byte-exact');
  // The same socket serves the next request (reads resumed, nothing read past the body).
  const small = new SpliceProbe(pool, out.fd, {}).go('/100');
  t.equal(await small.done, undefined);
  t.equal(Buffer.concat(small.js).toString('hex'), patternBytes(100, 3).toString('hex'), 'the next response on the socket, through JS, exact');
  t.equal(up.connections(), 1, 'one upstream connection: the socket was reused');
  t.end();
});

t.test('a body fully read with its head, or below the threshold, stays in JS', { skip }, async (t) => {
  const up = await origin(t, 1 << 20);
  const pool = new UpstreamPool(parseTarget(up.url), { connectMs: 2000, responseMs: 2000 });
  t.teardown(() => pool.close());
  const out = await sink(t);
  const p = new SpliceProbe(pool, out.fd, { minBody: 1000 }).go('/20000');
  t.equal(await p.done, undefined);
  t.equal(p.lent, -1, 'all of it came with the head: never lent');
  t.equal(sha256(Buffer.concat(p.js)), sha256(patternBytes(20000, 3)), 'exact through JS');
  const late = await origin(t, 0);
  const pool2 = new UpstreamPool(parseTarget(late.url), { connectMs: 2000, responseMs: 2000 });
  t.teardown(() => pool2.close());
  const q = new SpliceProbe(pool2, out.fd, {}).go('/65535');
  t.equal(await q.done, undefined);
  t.equal(q.lent, -1, 'below the threshold: never lent');
  t.equal(sha256(Buffer.concat(q.js)), sha256(patternBytes(65535, 3)), 'exact through JS');
  t.end();
});

t.test('a splice given back early: JS reads exactly the rest', { skip }, async (t) => {
  const up = await origin(t, 0);
  const pool = new UpstreamPool(parseTarget(up.url), { connectMs: 2000, responseMs: 2000 });
  t.teardown(() => pool.close());
  const n = 200_000;
  const out = await sink(t);
  const p = new SpliceProbe(pool, out.fd, { giveBack: 5000 }).go(`/${n}`);
  t.equal(await p.done, undefined, 'complete');
  t.equal(p.rest?.length, 0, 'the head came alone');
  const got = await out.got(n - 5000);
  t.equal(got.bytes, n - 5000);
  t.equal(sha256(Buffer.concat(p.js)), sha256(patternBytes(n, 3).subarray(n - 5000)), 'the last 5000 bytes through JS, exact');
  const next = new SpliceProbe(pool, out.fd, {}).go('/10');
  t.equal(await next.done, undefined);
  t.equal(up.connections(), 1, 'reused');
  t.end();
});

t.test('a failed splice fails the exchange and drops the socket', { skip }, async (t) => {
  const up = await origin(t, 0);
  const pool = new UpstreamPool(parseTarget(up.url), { connectMs: 2000, responseMs: 2000 });
  t.teardown(() => pool.close());
  const out = await sink(t);
  const err = Object.assign(new Error('upstream reset mid-body'), { code: 'ECONNRESET' });
  const p = new SpliceProbe(pool, out.fd, { fail: err }).go('/100000');
  const f = await p.done;
  t.equal(f?.err.code, 'ECONNRESET', 'failed with the upstream\'s error');
  while (pool.size > 0) await new Promise((r) => setTimeout(r, 5));
  t.pass('the socket is gone');
  t.end();
});

t.test('BodySplice: head and rest through node:http first, a lend for exactly the rest, the idle timer re-armed while bytes move', async (t) => {
  const conn = new PassThrough() as PassThrough & { setTimeout(ms: number): unknown };
  const armed: number[] = [];
  conn.setTimeout = (ms: number) => armed.push(ms);
  let spliced = 0;
  const lends: Array<{ fd: number; limit: number | undefined; onEnd: (o: { end: 'done' }) => void }> = [];
  const stream = {
    canSplice: () => true,
    get splicedOut() {
      return spliced;
    },
    spliceTx: (fd: number, onEnd: (o: { end: 'done' }) => void, limit?: number) => lends.push({ fd, limit, onEnd }),
    closeSplices: () => undefined,
  };
  const server = net.createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upstream = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => upstream.once('connect', r));
  server.close();
  t.teardown(() => upstream.destroy());
  const fd = socketFd(upstream);
  const order: string[] = [];
  const res = { write: (b: Buffer, cb: (err?: Error) => void) => {
    order.push(`write ${b.length}`);
    setTimeout(() => cb(), 5);
  } };
  const results: number[] = [];
  const splice = new BodySplice(conn, stream as never, upstream, 1000, 40, {
    returned: (n) => results.push(n),
    upstreamFailed: () => t.fail('upstream failed'),
    clientFailed: () => t.fail('client failed'),
  });
  splice.start(res as never, Buffer.from('abc'));
  t.same(lends, [], 'no lend before node:http handed the bytes on');
  await new Promise((r) => setTimeout(r, 20));
  t.same(order, ['write 3']);
  t.equal(lends.length, 1, 'lent once written');
  t.same([lends[0]?.fd, lends[0]?.limit], [fd, 1000], 'the upstream fd, exactly the rest');
  spliced = 500;
  await new Promise((r) => setTimeout(r, 25));
  t.ok(armed.includes(40), `the connection's idle timer re-armed while bytes move (${armed.join(',')})`);
  const before = armed.length;
  await new Promise((r) => setTimeout(r, 40));
  t.equal(armed.length, before, 'not re-armed while nothing moves');
  lends[0]?.onEnd({ end: 'done' });
  t.same(results, [0], 'done: nothing left for JS');
  await new Promise((r) => setTimeout(r, 30));
  t.equal(armed.length, before, 'no watch after the end');
});
