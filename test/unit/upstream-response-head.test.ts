// The upstream response head parser (proxy/upstream/response-head.ts): what it
// takes, what it drops, and every malformation it refuses (counted as the
// upstream error reason `protocol`).
import t from 'tap';
import { upstreamReason } from '../../proxy/fronts/upstream-errors.js';
import { MAX_RESPONSE_HEAD, ResponseHeadError, parseResponseHead } from '../../proxy/upstream/response-head.js';

const parse = (s: string, limit?: number) => parseResponseHead(Buffer.from(s, 'latin1'), limit);

t.test('a plain head: status, reason, fields in order and case, framing by Content-Length', (t) => {
  const h = parse('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello');
  t.ok(h);
  t.equal(h?.status, 200);
  t.equal(h?.reason, 'OK');
  t.same(h?.headers, ['Content-Type', 'text/plain', 'Content-Length', '5', 'X-A', '1']);
  t.equal(h?.framing, 'length');
  t.equal(h?.contentLength, 5);
  t.equal(h?.close, false);
  t.equal(h?.size, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n'.length);
  t.end();
});

t.test('an incomplete head asks for more', (t) => {
  t.equal(parse('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'), undefined);
  t.equal(parse('HTTP/1.1 20'), undefined);
  t.end();
});

t.test('hop-by-hop fields and those Connection names are dropped; Set-Cookie repeats are kept', (t) => {
  const h = parse(
    'HTTP/1.1 200 OK\r\nConnection: close, X-Hop, Content-Length\r\nKeep-Alive: timeout=5\r\nX-Hop: a\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTrailer: y\r\nContent-Length: 0\r\n\r\n',
  );
  t.same(h?.headers, ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Length', '0'], 'Content-Length is never nominated away');
  t.equal(h?.close, true);
  t.end();
});

t.test('framing: chunked (Transfer-Encoding dropped from the fields), until close, 1xx none', (t) => {
  const c = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n');
  t.equal(c?.framing, 'chunked');
  t.same(c?.headers, []);
  t.equal(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n')?.framing, 'close', 'a final coding other than chunked runs to the close');
  t.equal(parse('HTTP/1.1 200 OK\r\n\r\n')?.framing, 'close');
  t.equal(parse('HTTP/1.1 100 Continue\r\n\r\n')?.framing, 'none');
  t.equal(parse('HTTP/1.1 204 No Content\r\n\r\n')?.status, 204);
  t.end();
});

t.test('HTTP/1.0 closes unless it says keep-alive; a status line without reason is taken', (t) => {
  t.equal(parse('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')?.close, true);
  t.equal(parse('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n')?.close, false);
  t.equal(parse('HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n')?.reason, '');
  t.equal(parse('HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n')?.reason, '');
  t.equal(parse('HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n')?.headers[1], '', 'an empty value');
  t.end();
});

const refused: [string, string, string][] = [
  ['no HTTP/', 'HTTX/1.1 200 OK\r\n\r\n', 'HPE_INVALID_CONSTANT'],
  ['HTTP/2 status line', 'HTTP/2.0 200 OK\r\n\r\n', 'HPE_INVALID_VERSION'],
  ['two-digit status', 'HTTP/1.1 20 OK\r\n\r\n', 'HPE_INVALID_VERSION'],
  ['status 099', 'HTTP/1.1 099 X\r\n\r\n', 'HPE_INVALID_VERSION'],
  ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['no colon', 'HTTP/1.1 200 OK\r\nnonsense\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['bad name', 'HTTP/1.1 200 OK\r\nX(A): 1\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['bare CR in a value', 'HTTP/1.1 200 OK\r\nX-A: 1\r2\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: 1\x002\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
  ['bare LF between fields', 'HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n', 'HPE_LF_EXPECTED'],
  ['bare LF head end (incomplete)', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n', 'HPE_LF_EXPECTED'],
  ['two equal Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
  ['two different Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
  ['a Content-Length list', 'HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx', 'HPE_INVALID_CONTENT_LENGTH'],
  ['a signed Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx', 'HPE_INVALID_CONTENT_LENGTH'],
  ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
];

for (const [what, head, code] of refused) {
  t.test(`refused: ${what}`, (t) => {
    let caught: unknown;
    try {
      parse(head);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ResponseHeadError, 'a ResponseHeadError');
    t.equal((caught as ResponseHeadError | undefined)?.code, code);
    t.equal(upstreamReason(new ResponseHeadError(code, 'x')), 'protocol', 'counted as protocol');
    t.end();
  });
}

t.test('a head over the limit is refused, complete or not', (t) => {
  const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(MAX_RESPONSE_HEAD)}`;
  t.throws(() => parse(big), { code: 'HPE_HEADER_OVERFLOW' }, 'without waiting for its end');
  t.throws(() => parse('HTTP/1.1 200 OK\r\nX-A: 12345\r\n\r\n', 20), { code: 'HPE_HEADER_OVERFLOW' });
  t.ok(parse(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(60_000)}\r\n\r\n`), 'a long cookie-sized head is fine');
  t.end();
});
