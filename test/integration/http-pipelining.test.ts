// Error answers of the HTTP/1.1 front (issue 8, items 5 and 10): a malformed
// request pipelined behind a response in flight must not inject a status line
// into that response; pipelined HTTP/1.0 requests lose no response; an
// oversized request line gets a 431 (not a reset), counted once.
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { startStand } from '../helpers/stand.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';

const { pki, sc } = await startStand(t, startUpstream, ['--limits-max-header-size', '8192']);
const ca = fs.readFileSync(pki.caCert);

interface Conversation {
  /** Every byte the sidecar sent, until it closed. */
  data: Buffer;
  /** How the connection ended: 'end' (FIN / close_notify) or the error code (e.g. ECONNRESET). */
  ended: string;
}

/** Write `bytes` at once on a TLS connection and collect the whole answer until the sidecar closes. */
function converse(bytes: string | Buffer): Promise<Conversation> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = 'end';
    const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, ca, servername: 'localhost' }, () => s.write(bytes));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (err: NodeJS.ErrnoException) => (ended = err.code ?? err.message));
    s.on('close', () => resolve({ data: Buffer.concat(chunks), ended }));
  });
}

interface Parsed {
  head: string;
  body: Buffer;
}

/** Parse one HTTP/1.x response at the start of `buf` (Content-Length or chunked); returns it and the bytes after it. */
function parseResponse(buf: Buffer): { res: Parsed; rest: Buffer } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.subarray(0, end).toString('latin1');
  let off = end + 4;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl) {
    const n = Number(cl[1]);
    if (buf.length < off + n) return undefined;
    return { res: { head, body: buf.subarray(off, off + n) }, rest: buf.subarray(off + n) };
  }
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(head)) return undefined;
  const parts: Buffer[] = [];
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', off);
    if (lineEnd < 0) return undefined;
    const size = parseInt(buf.subarray(off, lineEnd).toString('latin1'), 16);
    if (Number.isNaN(size)) return undefined;
    off = lineEnd + 2;
    if (size === 0) {
      // No trailers from this upstream: the last chunk is followed by one CRLF.
      if (buf.subarray(off, off + 2).toString('latin1') !== '\r\n') return undefined;
      return { res: { head, body: Buffer.concat(parts) }, rest: buf.subarray(off + 2) };
    }
    if (buf.length < off + size + 2) return undefined;
    parts.push(buf.subarray(off, off + size));
    off += size + 2;
  }
}

const http1xx4 = (m: string): number => metricValue(m, 'ktls_sidecar_http_requests_total', { protocol: 'http1', status_class: '4xx' });

t.test('a malformed request pipelined behind a 16 MiB response: body intact, no 400 injected, then close', async (t) => {
  const n = 16 * 1024 * 1024;
  const before = http1xx4(await sc.metrics());
  const c = await converse(`GET /bytes?n=${n} HTTP/1.1\r\nHost: localhost\r\n\r\nBOGUS\x01 / HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  const first = parseResponse(c.data);
  t.ok(first, `a complete first response (got ${c.data.length} bytes)`);
  if (!first) return;
  t.match(first.res.head, /^HTTP\/1\.1 200 /);
  t.equal(first.res.body.length, n);
  t.equal(sha256(first.res.body), sha256(patternBytes(n, 7)), 'sha256 of the 16 MiB body');
  t.equal(first.res.body.indexOf('HTTP/1.1 400'), -1, 'no status line inside the body');
  t.equal(first.rest.toString('latin1'), '', 'nothing after the response: the connection just closes');
  t.equal(c.ended, 'end', 'closed cleanly, not reset');
  t.equal(http1xx4(await sc.metrics()) - before, 1, 'the malformed request is counted once as 4xx');
});

t.test('a malformed request sent while a 16 MiB response streams is not answered inside it', async (t) => {
  const n = 16 * 1024 * 1024;
  const c = await new Promise<Conversation>((resolve) => {
    const chunks: Buffer[] = [];
    let ended = 'end';
    const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, ca, servername: 'localhost' }, () => {
      s.write(`GET /bytes?n=${n} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    });
    s.on('data', (d: Buffer) => {
      // The response is on the wire: now the garbage (what a desynced client or an attacker sends).
      if (chunks.length === 0) s.write('BOGUS\x01 / HTTP/1.1\r\n\r\n');
      chunks.push(d);
    });
    s.on('error', (err: NodeJS.ErrnoException) => (ended = err.code ?? err.message));
    s.on('close', () => resolve({ data: Buffer.concat(chunks), ended }));
  });
  const first = parseResponse(c.data);
  t.ok(first, `a complete response (got ${c.data.length} bytes)`);
  if (!first) return;
  t.equal(sha256(first.res.body), sha256(patternBytes(n, 7)), 'sha256 of the 16 MiB body');
  t.equal(c.data.indexOf('HTTP/1.1 400'), -1, 'no 400 anywhere in the stream');
  t.equal(first.rest.length, 0, 'then the close');
  t.equal(c.ended, 'end');
});

t.test('two pipelined HTTP/1.0 requests: no response is lost', async (t) => {
  const c = await converse('GET /one HTTP/1.0\r\n\r\nGET /two HTTP/1.0\r\n\r\n');
  const first = parseResponse(c.data);
  t.ok(first, `the first response arrives complete (got ${JSON.stringify(c.data.toString('latin1').slice(0, 200))})`);
  if (!first) return;
  t.match(first.res.head, /^HTTP\/1\.[01] 200 /);
  t.equal(first.res.body.toString(), 'ok\n');
  // The first answer of an HTTP/1.0 request without keep-alive may close the
  // connection (RFC 9112 §9.3); if a second answer comes, it must be whole.
  if (first.rest.length > 0) {
    const second = parseResponse(first.rest);
    t.ok(second, 'a second response, if any, is complete');
    t.match(second?.res.head ?? '', /^HTTP\/1\.[01] 200 /);
    t.equal(second?.rest.length, 0);
  }
  t.equal(c.ended, 'end', 'closed cleanly, not reset');
});

t.test('two pipelined HTTP/1.0 keep-alive requests: the first answer is whole and tells the truth', async (t) => {
  const c = await converse('GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.0\r\n\r\n');
  const first = parseResponse(c.data);
  t.ok(first, 'first response complete');
  if (!first) return;
  t.equal(first.res.body.toString(), 'ok\n');
  if (/\r\nconnection: close/i.test(first.res.head)) {
    t.equal(first.rest.length, 0, 'announced close: nothing after it');
  } else {
    const second = parseResponse(first.rest);
    t.ok(second, 'announced keep-alive: the second response follows, whole');
    t.equal(second?.res.body.toString(), 'ok\n');
  }
  t.equal(c.ended, 'end');
});

const closedBadRequest = (m: string): number => metricValue(m, 'ktls_sidecar_connections_closed_total', { reason: 'bad_request' });

t.test('an oversized request line gets 431 (not a reset), counted once', async (t) => {
  const m0 = await sc.metrics();
  const before = http1xx4(m0);
  const closedBefore = closedBadRequest(m0);
  const c = await converse(`GET /${'a'.repeat(40_000)} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  t.match(c.data.toString('latin1'), /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  t.match(c.data.toString('latin1'), /\r\nconnection: close\r\n/i);
  t.equal(c.ended, 'end', 'closed cleanly, not reset');
  const m1 = await sc.metrics();
  t.equal(http1xx4(m1) - before, 1, 'counted once');
  t.equal(closedBadRequest(m1) - closedBefore, 1, 'the connection closes with reason bad_request (its close line says why)');
});

t.test('oversized headers arriving in many writes get one 431, counted once', async (t) => {
  const before = http1xx4(await sc.metrics());
  const c = await new Promise<Conversation>((resolve) => {
    const chunks: Buffer[] = [];
    let ended = 'end';
    const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, ca, servername: 'localhost' }, () => {
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\n');
      // Keep sending header lines after the limit is passed, as a slow client would.
      for (let i = 0; i < 40; i++) s.write(`x-fill-${i}: ${'b'.repeat(1000)}\r\n`);
      s.write('\r\n');
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (err: NodeJS.ErrnoException) => (ended = err.code ?? err.message));
    s.on('close', () => resolve({ data: Buffer.concat(chunks), ended }));
  });
  const text = c.data.toString('latin1');
  t.match(text, /^HTTP\/1\.1 431 /);
  t.equal(text.split('HTTP/1.1 ').length - 1, 1, 'exactly one answer');
  t.equal(c.ended, 'end', 'closed cleanly, not reset');
  t.equal(http1xx4(await sc.metrics()) - before, 1, 'counted once');
});

t.test('the sidecar still serves after all of the above', async (t) => {
  const c = await converse('GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
  t.match(c.data.toString('latin1'), /^HTTP\/1\.1 200 /);
});
