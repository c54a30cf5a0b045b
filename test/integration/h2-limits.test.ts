// What one client can hold: HTTP/2 streams per connection
// (limits.maxConcurrentStreams), upstream connections (upstream.maxSockets,
// a bounded wait queue upstream.maxPending, then 503 overloaded), an HTTP/2
// header block that never completes (timeouts.headers), and the framing of
// request bodies sent without Content-Length.
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import tls from 'node:tls';
import t from 'tap';
import { type Response, request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { patternBytes, startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);

/** An upstream whose /hold requests wait for release(); counts how many it holds at once. */
interface HoldUpstream {
  url: string;
  inflight: number;
  maxInflight: number;
  /** Answer every held request, and later ones at once while `open`. */
  release(open?: boolean): void;
  reset(): void;
  close(): Promise<void>;
}

function startHoldUpstream(): Promise<HoldUpstream> {
  let held: http.ServerResponse[] = [];
  let open = false;
  const answer = (res: http.ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 });
    res.end('held\n');
  };
  const server = http.createServer((req, res) => {
    req.resume();
    hold.inflight++;
    hold.maxInflight = Math.max(hold.maxInflight, hold.inflight);
    res.once('close', () => hold.inflight--);
    if (open) answer(res);
    else held.push(res);
  });
  const hold: HoldUpstream = {
    url: '',
    inflight: 0,
    maxInflight: 0,
    release: (keepOpen = false) => {
      open = keepOpen;
      const list = held;
      held = [];
      for (const res of list) answer(res);
    },
    reset: () => {
      open = false;
      hold.maxInflight = hold.inflight;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      hold.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      resolve(hold);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (pred()) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** `p`, or undefined if it has not settled within `ms` (so a pre-fix hang fails the test instead of stalling it). */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return Promise.race([p, sleep(ms).then(() => undefined)]);
}

const hold = await startHoldUpstream();
t.teardown(() => hold.close());
const up = await startUpstream();
t.teardown(() => up.close());
const cert = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const [streams, pool, queueTimeout, plain] = await Promise.all([
  startSidecar([...cert, '--upstream-url', hold.url, '--limits-max-concurrent-streams', '4']),
  startSidecar([...cert, '--upstream-url', hold.url, '--upstream-max-sockets', '2', '--upstream-max-pending', '1', '--timeouts-upstream-connect', '30s']),
  startSidecar([...cert, '--upstream-url', hold.url, '--upstream-max-sockets', '1', '--timeouts-upstream-connect', '1s']),
  startSidecar([...cert, '--upstream-url', up.url, '--timeouts-headers', '1s', '--timeouts-idle', '30s']),
]);
t.teardown(() => Promise.all([streams.stop(), pool.stop(), queueTimeout.stop(), plain.stop()]));

const overloaded = async (sc: { metrics(): Promise<string> }): Promise<number> =>
  metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'overloaded' });

/** One HTTP/2 request on `client`; resolves with its status and body. */
function h2Request(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    if (body) req.end(body);
  });
}

t.test('HTTP/2 streams per connection are bounded by limits.maxConcurrentStreams', async (t) => {
  hold.reset();
  const client = http2.connect(`https://localhost:${streams.tlsPort}`, { ca });
  t.teardown(() => client.close());
  const settings = await new Promise<http2.Settings>((r) => client.once('remoteSettings', r));
  t.equal(settings.maxConcurrentStreams, 4, 'SETTINGS_MAX_CONCURRENT_STREAMS advertised');
  const all = Array.from({ length: 10 }, () => h2Request(client, { ':path': '/hold' }));
  await until(() => hold.inflight >= 4, 'four held requests');
  await sleep(300);
  t.equal(hold.inflight, 4, 'only four streams reach the upstream at once');
  hold.release(true);
  const done = await within(Promise.all(all), 10_000);
  t.same(done?.map((r) => r.status), Array(10).fill(200), 'every stream is served in turn');
  t.ok(hold.maxInflight <= 4, `upstream never held more than 4 (held ${hold.maxInflight})`);
});

t.test('upstream.maxSockets bounds upstream connections; past upstream.maxPending waiting → 503 overloaded', async (t) => {
  hold.reset();
  const before = await overloaded(pool);
  const get = (): Promise<Response> => request(pool.tlsPort, { ca: pki.caCert, path: '/hold' });
  const running = [get(), get()];
  await until(() => hold.inflight === 2, 'two held requests');
  running.push(get());
  await sleep(300);
  t.equal(hold.inflight, 2, 'the third request waits for a socket instead of opening one');
  const refused = await within(Promise.all([get(), get()]), 5000);
  t.same(refused?.map((r) => r.status), [503, 503], 'beyond the queue: 503 at once');
  t.match(refused?.[0]?.body.toString() ?? '', /too many requests/);
  t.equal(await overloaded(pool), before + 2, 'counted as upstream error overloaded');
  hold.release(true);
  const served = await within(Promise.all(running), 10_000);
  t.same(served?.map((r) => r.status), [200, 200, 200], 'held and queued requests are served');
  t.ok(hold.maxInflight <= 2, `upstream never held more than 2 (held ${hold.maxInflight})`);
});

t.test('a request queued for a socket longer than timeouts.upstreamConnect gets 503 overloaded', async (t) => {
  hold.reset();
  const before = await overloaded(queueTimeout);
  const first = request(queueTimeout.tlsPort, { ca: pki.caCert, path: '/hold' });
  await until(() => hold.inflight === 1, 'one held request');
  const queued = await within(request(queueTimeout.tlsPort, { ca: pki.caCert, path: '/hold' }), 5000);
  t.equal(queued?.status, 503, 'the queued request gives up after timeouts.upstreamConnect');
  t.equal(await overloaded(queueTimeout), before + 1, 'counted as upstream error overloaded');
  hold.release(true);
  t.equal((await within(first, 10_000))?.status, 200);
});

t.test('HTTP/2 bodies without content-length reach the upstream framed (chunked), whatever the method', async (t) => {
  const client = http2.connect(`https://localhost:${plain.tlsPort}`, { ca });
  t.teardown(() => client.close());
  const body = patternBytes(5000, 3);
  for (const method of ['GET', 'DELETE', 'OPTIONS', 'POST']) {
    const seen = up.seen.length;
    const r = await h2Request(client, { ':method': method, ':path': '/sha' }, body);
    t.equal(r.status, 200, method);
    const got = JSON.parse(r.body.toString()) as { length: number; te: string | null };
    t.equal(got.length, 5000, `${method}: the whole body arrives`);
    t.equal(got.te, 'chunked', `${method}: framed chunked`);
    t.equal(up.seen.length, seen + 1, `${method}: no extra request smuggled in the body`);
  }
});

t.test('an HTTP/1.1 DELETE with a chunked body stays chunked toward the upstream', async (t) => {
  const seen = up.seen.length;
  const r = await request(plain.tlsPort, {
    ca: pki.caCert,
    method: 'DELETE',
    path: '/sha',
    headers: { 'transfer-encoding': 'chunked' },
    body: Readable.from([patternBytes(3000, 4)]),
  });
  t.equal(r.status, 200);
  const got = JSON.parse(r.body.toString()) as { length: number; te: string | null };
  t.equal(got.length, 3000, 'the whole body arrives');
  t.equal(got.te, 'chunked');
  t.equal(up.seen.length, seen + 1, 'no extra request smuggled in the body');
});

/** An HTTP/2 frame: 9-byte header + payload. */
function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

t.test('an HTTP/2 header block left incomplete is ended after timeouts.headers (GOAWAY), counted', async (t) => {
  const closedBefore = metricValue(await plain.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'headers_timeout' });
  const s = tls.connect({ host: '127.0.0.1', port: plain.tlsPort, servername: 'localhost', ca, ALPNProtocols: ['h2'] });
  t.teardown(() => s.destroy());
  await new Promise<void>((r) => s.once('secureConnect', () => r()));
  t.equal(s.alpnProtocol, 'h2');
  let got = Buffer.alloc(0);
  s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  s.on('error', () => undefined);
  const started = performance.now();
  // Preface, SETTINGS, then HEADERS (END_STREAM, no END_HEADERS): :method GET,
  // :scheme https, :path / from the static table, and no CONTINUATION ever.
  s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
  s.write(frame(0x4, 0, 0));
  s.write(frame(0x1, 0x1, 1, Buffer.from([0x82, 0x87, 0x84])));
  const closed = await within(new Promise<void>((r) => s.once('close', () => r())).then(() => true), 10_000);
  t.ok(closed, 'the connection is closed');
  t.ok(performance.now() - started < 8000, 'well before the 30 s idle timeout');
  // Frames from the server: find the GOAWAY (type 7) and its error code.
  let goawayCode: number | undefined;
  for (let off = 0; off + 9 <= got.length; ) {
    const len = got.readUIntBE(off, 3);
    if (got[off + 3] === 0x7 && off + 9 + 8 <= got.length) goawayCode = got.readUInt32BE(off + 9 + 4);
    off += 9 + len;
  }
  t.equal(goawayCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY ENHANCE_YOUR_CALM');
  let closedAfter = 0;
  for (let i = 0; i < 40 && closedAfter <= closedBefore; i++) {
    closedAfter = metricValue(await plain.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'headers_timeout' });
    if (closedAfter <= closedBefore) await sleep(50);
  }
  t.equal(closedAfter, closedBefore + 1, 'counted as closed by headers_timeout');
});

t.test('a header block completed by CONTINUATION, sent in 4-byte pieces, is served and the session lives on', async (t) => {
  const s = tls.connect({ host: '127.0.0.1', port: plain.tlsPort, servername: 'localhost', ca, ALPNProtocols: ['h2'] });
  t.teardown(() => s.destroy());
  await new Promise<void>((r) => s.once('secureConnect', () => r()));
  s.setNoDelay(true);
  let got = Buffer.alloc(0);
  let closed = false;
  s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  s.on('close', () => (closed = true));
  s.on('error', () => undefined);
  const bytes = Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    frame(0x4, 0, 0),
    // END_STREAM, block continues: :method GET, :scheme https, :authority localhost (literal).
    frame(0x1, 0x1, 1, Buffer.from([0x82, 0x87, 0x01, 0x09, ...Buffer.from('localhost')])),
    frame(0x9, 0x4, 1, Buffer.from([0x84])), // CONTINUATION, END_HEADERS: :path /
  ]);
  // Frame headers split across reads must not confuse the watch.
  for (let i = 0; i < bytes.length; i += 4) {
    s.write(bytes.subarray(i, i + 4));
    await sleep(5);
  }
  /** The server's HEADERS frame (type 1) on stream 1, once it arrived. */
  const answered = (): boolean => {
    for (let off = 0; off + 9 <= got.length; off += 9 + got.readUIntBE(off, 3)) {
      if (got[off + 3] === 0x1 && got.readUInt32BE(off + 5) === 1) return true;
    }
    return false;
  };
  await until(answered, 'the response HEADERS');
  await sleep(1500);
  t.notOk(closed, 'the connection outlives timeouts.headers');
});

t.test('an HTTP/2 session with complete header blocks outlives timeouts.headers', async (t) => {
  const client = http2.connect(`https://localhost:${plain.tlsPort}`, { ca });
  t.teardown(() => client.close());
  t.equal((await h2Request(client, { ':path': '/' })).status, 200);
  await sleep(1500);
  t.notOk(client.destroyed || client.closed, 'the session is still open');
  t.equal((await h2Request(client, { ':path': '/' })).status, 200, 'and serves the next stream');
});
