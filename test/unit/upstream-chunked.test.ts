// The chunked decoder of upstream responses (proxy/upstream/chunked.ts): the
// body whatever the buffers' boundaries, trailers dropped, the end found
// exactly, and malformed framing refused (counted as `protocol`).
import t from 'tap';
import { upstreamReason } from '../../proxy/fronts/upstream-errors.js';
import { ChunkedDecoder, ChunkedError } from '../../proxy/upstream/chunked.js';

/** Feed `wire` in pieces of `step` bytes; the body and the end offset within the last piece. */
function decode(wire: string, step = wire.length): { body: string; end: number; pieces: number } {
  const d = new ChunkedDecoder();
  const parts: Buffer[] = [];
  const sink = { decoded: (c: Buffer) => parts.push(Buffer.from(c)) };
  const all = Buffer.from(wire, 'latin1');
  let end = -1;
  let pieces = 0;
  for (let i = 0; i < all.length && end === -1; i += step) {
    pieces++;
    const piece = all.subarray(i, i + step);
    const e = d.feed(piece, 0, sink);
    if (e !== -1) end = i + e;
  }
  return { body: Buffer.concat(parts).toString('latin1'), end, pieces };
}

const WIRE = '5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n';

t.test('decodes whole and at every split, ends just past the last CRLF', (t) => {
  for (let step = 1; step <= WIRE.length; step++) {
    const r = decode(WIRE, step);
    if (r.body !== 'hello world0123456789' || r.end !== WIRE.length) {
      t.fail(`step ${step}: ${JSON.stringify(r)}`);
      return t.end();
    }
  }
  t.pass('every split point');
  t.end();
});

t.test('bytes after the end are left alone (the offset says where the message ended)', (t) => {
  const d = new ChunkedDecoder();
  const buf = Buffer.from('3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200', 'latin1');
  const end = d.feed(buf, 0, { decoded: () => undefined });
  t.equal(end, '3\r\nabc\r\n0\r\n\r\n'.length);
  t.ok(d.done);
  t.end();
});

t.test('feeding from an offset', (t) => {
  const d = new ChunkedDecoder();
  const got: string[] = [];
  const buf = Buffer.from('HEAD2\r\nok\r\n0\r\n\r\n', 'latin1');
  t.equal(d.feed(buf, 4, { decoded: (c) => got.push(c.toString()) }), buf.length);
  t.same(got, ['ok']);
  t.end();
});

const bad: [string, string][] = [
  ['no size', '\r\nabc\r\n0\r\n\r\n'],
  ['a non-hex size', 'g\r\nabc\r\n0\r\n\r\n'],
  ['a size with 14 digits', '00000000000001\r\na\r\n0\r\n\r\n'],
  ['data longer than its size', '2\r\nabc\r\n0\r\n\r\n'],
  ['bare LF after the size', '3\nabc\r\n0\r\n\r\n'],
  ['bare LF in an extension', '3;a\nabc\r\n0\r\n\r\n'],
  ['bare LF in a trailer', '0\r\nX: y\n\r\n'],
  ['bare LF at the end', '0\r\n\n'],
  ['a space before the size', ' 3\r\nabc\r\n0\r\n\r\n'],
];

for (const [what, wire] of bad) {
  t.test(`refused: ${what}`, (t) => {
    let caught: unknown;
    try {
      decode(wire);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ChunkedError, 'a ChunkedError');
    t.equal(upstreamReason(caught as ChunkedError), 'protocol');
    t.end();
  });
}

t.test('a trailer section without bound is refused', (t) => {
  t.throws(() => decode(`0\r\nX: ${'a'.repeat(70_000)}\r\n\r\n`), { code: 'HPE_INVALID_CHUNK_SIZE' });
  t.end();
});
