// Request smuggling through the Connection header (issue 8, item 2): a client
// must not be able to make the sidecar drop the framing of a request, nor the
// headers the sidecar itself sets or strips. The upstream here records the raw
// bytes of every connection and parses them with node:http, as a real upstream
// would: a body forwarded without framing shows up as a second request.
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { startStand } from '../helpers/stand.js';

interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface RawUpstream {
  url: string;
  /** Every request node:http parsed out of the bytes, in order. */
  seen: SeenRequest[];
  /** URLs of requests whose body never completed because the sidecar aborted them. */
  aborted: string[];
  /** The raw bytes received, all connections concatenated in arrival order. */
  raw(): string;
  close(): Promise<void>;
}

/** Feed a socket's bytes to node:http through a Duplex, so the 'data' taps see every byte. */
function tapped(socket: net.Socket, record: (d: Buffer) => void): Duplex {
  const d = new Duplex({
    read: () => socket.resume(),
    write: (chunk: Buffer, _enc, cb) => {
      socket.write(chunk, () => cb());
    },
    final: (cb) => socket.end(() => cb()),
    destroy: (err, cb) => {
      socket.destroy();
      cb(err);
    },
  });
  socket.on('data', (chunk: Buffer) => {
    record(chunk);
    if (!d.push(chunk)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', () => d.destroy());
  socket.on('close', () => d.destroy());
  return d;
}

async function startRawUpstream(): Promise<RawUpstream> {
  const seen: SeenRequest[] = [];
  const aborted: string[] = [];
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const parser = http.createServer((req, res) => {
    const body: Buffer[] = [];
    req.on('data', (d: Buffer) => body.push(d));
    req.on('close', () => {
      if (!req.complete) aborted.push(req.url ?? '');
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(body).toString('latin1') });
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 });
      res.end('ok\n');
    });
  });
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    parser.emit('connection', tapped(s, (d) => chunks.push(d)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    aborted,
    raw: () => Buffer.concat(chunks).toString('latin1'),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

const { pki, up, sc } = await startStand(t, startRawUpstream);
const ca = fs.readFileSync(pki.caCert);

/**
 * Send `requests` one at a time on one TLS connection (each written after the
 * previous response is complete), and return the response heads once
 * `expected` responses came (or the connection closed). Responses are framed
 * by Content-Length (the raw upstream and the sidecar's own answers set it).
 */
function exchange(requests: string[], expected = requests.length): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const heads: string[] = [];
    let buf = Buffer.alloc(0);
    let next = 0;
    const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, ca, servername: 'localhost' }, () => {
      s.write(requests[next++] ?? '');
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? '0');
        if (buf.length < end + 4 + len) return;
        heads.push(head);
        buf = buf.subarray(end + 4 + len);
        if (next < requests.length) s.write(requests[next++] ?? '');
        else if (heads.length >= expected) {
          s.end();
          resolve(heads);
          return;
        }
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(heads));
  });
}

/** A complete second request hidden in a body: what the upstream must never parse as a request. */
const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: evil\r\nX-Forwarded-Client-Cert: Hash=forged;Subject="CN=admin"\r\nX-Forwarded-For: 10.6.6.6\r\n\r\n';

/** The head of the request the upstream received for `path`, as raw bytes. */
function rawHead(path: string): string {
  const raw = up.raw();
  const start = raw.indexOf(` ${path} HTTP/1.1\r\n`);
  return start < 0 ? '' : raw.slice(raw.lastIndexOf('\n', start) + 1, raw.indexOf('\r\n\r\n', start));
}

/** After the follow-up request /after-<tag> on the same connection, the upstream saw exactly these URLs. */
async function upstreamUrlsFor(tag: string, first: string): Promise<string[]> {
  const from = up.seen.length;
  const heads = await exchange([first, `GET /after-${tag} HTTP/1.1\r\nHost: localhost\r\n\r\n`]);
  if (heads.length !== 2) throw new Error(`expected 2 responses, got ${heads.length}: ${heads.join(' | ')}`);
  return up.seen.slice(from).map((r) => r.url);
}

function checkStamped(t: Test, req: SeenRequest | undefined): void {
  t.ok(req, 'the request reached the upstream');
  if (!req) return;
  t.equal(req.headers['x-forwarded-proto'], 'https', 'X-Forwarded-Proto stamped');
  t.equal(req.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the client address only');
  t.equal(req.headers['x-forwarded-port'], String(sc.tlsPort));
  t.notOk('x-forwarded-client-cert' in req.headers, 'no client-supplied X-Forwarded-Client-Cert');
}

t.test('Connection: content-length cannot unframe a GET body (one request upstream, framed)', async (t) => {
  const first = `GET /cl HTTP/1.1\r\nHost: localhost\r\nConnection: content-length\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`;
  const urls = await upstreamUrlsFor('cl', first);
  t.same(urls, ['/cl', '/after-cl'], 'exactly one request per client request, no /smuggled');
  t.match(rawHead('/cl'), new RegExp(`\\r\\ncontent-length: ${SMUGGLED.length}(\\r|$)`, 'i'), 'forwarded with its Content-Length');
  const req = up.seen.find((r) => r.url === '/cl');
  t.equal(req?.body, SMUGGLED, 'the body arrived as a body');
  checkStamped(t, req);
});

t.test('Connection: transfer-encoding cannot unframe a chunked body', async (t) => {
  const chunked = `${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`;
  const first = `POST /te HTTP/1.1\r\nHost: localhost\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`;
  const urls = await upstreamUrlsFor('te', first);
  t.same(urls, ['/te', '/after-te']);
  t.match(rawHead('/te'), /\r\n(transfer-encoding: chunked|content-length: \d+)(\r|$)/i, 'forwarded framed');
  const req = up.seen.find((r) => r.url === '/te');
  t.equal(req?.body, SMUGGLED);
  checkStamped(t, req);
});

t.test('Connection: host cannot remove Host', async (t) => {
  const urls = await upstreamUrlsFor('host', 'GET /host HTTP/1.1\r\nHost: app.example\r\nConnection: host\r\n\r\n');
  t.same(urls, ['/host', '/after-host']);
  const req = up.seen.find((r) => r.url === '/host');
  t.equal(req?.headers.host, 'app.example', 'Host reaches the upstream');
  t.equal(req?.headers['x-forwarded-host'], 'app.example');
});

t.test('Connection: x-forwarded-* / forwarded / the client-cert header cannot steer our stamping', async (t) => {
  const first =
    'GET /xff HTTP/1.1\r\nHost: localhost\r\n' +
    'Connection: x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-forwarded-port, forwarded, x-forwarded-client-cert\r\n' +
    'X-Forwarded-For: 10.6.6.6\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\n' +
    'Forwarded: for=10.6.6.6;proto=http\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\r\n';
  const urls = await upstreamUrlsFor('xff', first);
  t.same(urls, ['/xff', '/after-xff']);
  const req = up.seen.find((r) => r.url === '/xff');
  t.equal(req?.headers['x-forwarded-for'], '10.6.6.6, 127.0.0.1', 'appended to as without the Connection token: our hop is last');
  t.equal(req?.headers['x-forwarded-proto'], 'https');
  t.equal(req?.headers['x-forwarded-host'], 'localhost');
  t.equal(req?.headers['x-forwarded-port'], String(sc.tlsPort));
  t.equal(req?.headers.forwarded, 'for=127.0.0.1;host=localhost;proto=https', "the client's Forwarded is replaced by ours");
  t.notOk('x-forwarded-client-cert' in (req?.headers ?? {}));
});

t.test('a client Forwarded header never reaches the upstream as sent', async (t) => {
  const urls = await upstreamUrlsFor('fwd', 'GET /fwd HTTP/1.1\r\nHost: localhost\r\nForwarded: for=10.6.6.6;proto=http;by=admin\r\n\r\n');
  t.same(urls, ['/fwd', '/after-fwd']);
  const req = up.seen.find((r) => r.url === '/fwd');
  t.equal(req?.headers.forwarded, 'for=127.0.0.1;host=localhost;proto=https');
});

t.test('duplicate Host is answered 400, counted, and never forwarded', async (t) => {
  const from = up.seen.length;
  const count = async (): Promise<number> => metricValue(await sc.metrics(), 'ktls_sidecar_http_requests_total', { protocol: 'http1', status_class: '4xx' });
  const before = await count();
  const heads = await exchange(['GET /dup HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n']);
  t.match(heads[0] ?? '', /^HTTP\/1\.1 400 /, '400 Bad Request');
  t.match(heads[0] ?? '', /\r\nconnection: close/i);
  t.same(up.seen.slice(from).map((r) => r.url), []);
  t.equal((await count()) - before, 1, 'counted once as 4xx');
});

t.test('a chunked body with broken framing: 400 in turn, and the upstream request is aborted, not left waiting', async (t) => {
  const heads = await exchange([
    'GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n' +
      'POST /broken HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n\r\n',
  ], 2);
  t.match(heads[0] ?? '', /^HTTP\/1\.1 200 /, 'the earlier response first, whole');
  t.match(heads[1] ?? '', /^HTTP\/1\.1 400 /, 'then the 400 for the broken request');
  t.match(heads[1] ?? '', /\r\nconnection: close/i);
  t.equal(heads.length, 2);
  // The upstream got the head of /broken and part of its body; the sidecar must abort it once the client is gone.
  for (let i = 0; i < 100 && !up.aborted.includes('/broken'); i++) await new Promise((r) => setTimeout(r, 50));
  t.ok(up.aborted.includes('/broken'), 'the upstream request was aborted');
  t.notOk(up.seen.some((r) => r.url === '/broken'), 'and never completed as a request');
});

/** One HTTP/2 request with `headers`; resolves with its status. */
async function h2Status(t: Test, headers: http2.OutgoingHttpHeaders): Promise<number> {
  const client = http2.connect(`https://localhost:${sc.tlsPort}`, { ca });
  t.teardown(() => client.close());
  return new Promise<number>((resolve, reject) => {
    const req = client.request(headers);
    let st = 0;
    req.on('response', (h) => (st = Number(h[':status'])));
    req.on('error', reject);
    req.on('close', () => resolve(st));
    req.resume();
    req.end();
  });
}

t.test('HTTP/2: a Host that names another authority than :authority is answered 400, never forwarded', async (t) => {
  const status = await h2Status(t, { ':path': '/h2-mismatch', ':authority': 'app.example', host: 'other.example' });
  t.equal(status, 400, 'malformed (RFC 9113 §8.3.1): the sidecar and the upstream could route by different names');
  t.notOk(up.seen.some((r) => r.url === '/h2-mismatch'), 'the upstream never saw it');
});

t.test('HTTP/2: Host follows :authority upstream, and a client Forwarded is replaced', async (t) => {
  const status = await h2Status(t, { ':path': '/h2', ':authority': 'app.example', forwarded: 'for=10.6.6.6', 'x-forwarded-client-cert': 'Hash=forged' });
  t.equal(status, 200);
  const req = up.seen.find((r) => r.url === '/h2');
  t.equal(req?.headers.host, 'app.example', 'the upstream routes by :authority');
  t.equal(req?.headers['x-forwarded-host'], 'app.example', 'and X-Forwarded-Host agrees');
  t.equal(req?.headers.forwarded, 'for=127.0.0.1;host=app.example;proto=https');
  checkStamped(t, req);
});
