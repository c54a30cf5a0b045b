// Request-smuggling corpus against an upstream that parses what it receives
// strictly (helpers/recording-upstream.ts). Two outcome classes:
//   reject  malformed framing or syntax: the client gets 400 (or the
//           connection closed), never a second response, and the upstream saw
//           at most one well-framed request and never the smuggled one;
//   safe    well-formed but abusing Connection: either rejected as above, or
//           exactly one well-framed request upstream carrying exactly the
//           client's body, with the sidecar's own forwarding headers.
// In every case the upstream saw no malformed bytes and no `GET /smuggled`.
import t, { type Test } from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { firstStatus, h2Get, tlsExchange } from './helpers/raw.js';
import type { RecordedRequest } from './helpers/recording-upstream.js';
import { startAttackStand } from './helpers/stand.js';

const { up, sc, ca, checkRecovered } = await startAttackStand(t);

const HOST = 'Host: localhost\r\n';
const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n';

interface Outcome {
  status: number;
  closed: boolean;
  /** Status lines in the whole answer. */
  responses: number;
  requests: RecordedRequest[];
  malformed: number;
  /** Change of ktls_sidecar_upstream_errors_total (all reasons) over the attempt. */
  upstreamErrors: number;
}

const upstreamErrors = async (): Promise<number> => metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total');

async function attempt(bytes: string): Promise<Outcome> {
  up.clear();
  const errorsBefore = await upstreamErrors();
  const ex = await tlsExchange(sc.tlsPort, ca, [Buffer.from(bytes, 'latin1')]);
  // Whatever the sidecar forwarded has reached the upstream by the time the client got its answer; a little slack.
  await new Promise((r) => setTimeout(r, 100));
  return {
    status: firstStatus(ex.data),
    closed: ex.closed,
    responses: (ex.data.match(/HTTP\/1\.[01] \d{3} /g) ?? []).length,
    requests: [...up.requests],
    malformed: up.malformed,
    upstreamErrors: (await upstreamErrors()) - errorsBefore,
  };
}

/** What holds in every case. */
function neverSmuggled(t: Test, o: Outcome): void {
  t.equal(o.malformed, 0, 'the upstream never received unframed or malformed bytes');
  t.notOk(o.requests.some((r) => r.target.includes('/smuggled')), 'the smuggled request never reached the upstream');
  t.ok(o.requests.length <= 1, `at most one request reached the upstream (saw ${o.requests.length})`);
}

function rejected(t: Test, o: Outcome): void {
  t.ok(o.status === 400 || (o.status === 0 && o.closed), `400 or closed (status ${o.status}, closed ${o.closed})`);
  t.ok(o.responses <= 1, 'no second response');
  t.equal(o.upstreamErrors, 0, 'a malformed request is the client\'s fault: no upstream error counted');
  neverSmuggled(t, o);
}

const reject: Array<[string, string]> = [
  ['Content-Length together with Transfer-Encoding', `POST / HTTP/1.1\r\n${HOST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['Transfer-Encoding with obs-fold', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['Transfer-Encoding: chunked, identity', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['two differing Content-Length headers', `POST / HTTP/1.1\r\n${HOST}Content-Length: 0\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`],
  ['two Host headers', `GET / HTTP/1.1\r\n${HOST}Host: evil.example\r\n\r\n`],
  ['a bare CR inside a header', `GET / HTTP/1.1\r\n${HOST}X-A: a\rTransfer-Encoding: chunked\r\n\r\n`],
  ['bare LF line endings', `GET / HTTP/1.1\n${HOST}X-A: a\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`],
  ['a NUL in a header value', `GET / HTTP/1.1\r\n${HOST}X-A: a\0b\r\n\r\n`],
  ['a request line with tabs', `GET\t/\tHTTP/1.1\r\n${HOST}\r\n`],
  ['a chunk size that overflows 64 bits', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n`],
  ['a chunk extension with a control character', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n5;\x01x\r\nhello\r\n0\r\n\r\n`],
  ['a chunk-size line ended by a bare LF', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n`],
];

for (const [name, bytes] of reject) {
  t.test(`HTTP/1.1 ${name} → 400 or close, nothing smuggled`, async (t) => rejected(t, await attempt(bytes)));
}

t.test('HTTP/1.1 a good request pipelined before a bad one: one 200, then 400/close, exactly one upstream request', async (t) => {
  const o = await attempt(`GET /first HTTP/1.1\r\n${HOST}\r\nPOST / HTTP/1.1\r\n${HOST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`);
  t.equal(o.status, 200, 'the first request is answered');
  t.equal(o.requests.length, 1, 'exactly one request upstream');
  t.equal(o.requests[0]?.target, '/first');
  t.ok(o.responses <= 2, 'no third response');
  neverSmuggled(t, o);
});

/** Safe: rejected, or exactly one framed request upstream whose body is `body`. */
function forwardedOnce(t: Test, o: Outcome, body: string): RecordedRequest | undefined {
  neverSmuggled(t, o);
  if (o.status !== 200) {
    rejected(t, o);
    t.equal(o.requests.length, 0, 'rejected: nothing forwarded');
    return undefined;
  }
  t.equal(o.requests.length, 1, 'forwarded exactly once');
  t.equal(o.responses, 1, 'one response');
  const r = o.requests[0];
  t.equal(r?.body.toString('latin1'), body, 'the upstream got exactly the client\'s body, framed');
  return r;
}

const header = (r: RecordedRequest | undefined, name: string): string[] => (r?.headers ?? []).filter(([k]) => k === name).map(([, v]) => v);

t.test('HTTP/1.1 Connection: content-length on a GET with a body: the body stays framed', async (t) => {
  const o = await attempt(`GET / HTTP/1.1\r\n${HOST}Connection: content-length\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`);
  forwardedOnce(t, o, SMUGGLED);
});

t.test('HTTP/1.1 Connection: transfer-encoding on a chunked body: the body stays framed', async (t) => {
  const chunk = `${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`;
  const o = await attempt(`POST / HTTP/1.1\r\n${HOST}Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`);
  forwardedOnce(t, o, SMUGGLED);
});

t.test('HTTP/1.1 Connection: host cannot remove Host', async (t) => {
  const o = await attempt(`GET / HTTP/1.1\r\n${HOST}Connection: host\r\n\r\n`);
  const r = forwardedOnce(t, o, '');
  if (r) t.same(header(r, 'host'), ['localhost'], 'Host reaches the upstream unchanged');
});

t.test('HTTP/1.1 Connection: x-forwarded-for cannot remove or replace the sidecar\'s stamp', async (t) => {
  const o = await attempt(`GET / HTTP/1.1\r\n${HOST}Connection: x-forwarded-for\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n`);
  const r = forwardedOnce(t, o, '');
  if (!r) return;
  const xff = header(r, 'x-forwarded-for');
  t.equal(xff.length, 1, 'one X-Forwarded-For');
  t.match(xff[0] ?? '', /(^|, )127\.0\.0\.1$/, 'it ends with the real client address');
  t.same(header(r, 'x-forwarded-proto'), ['https'], 'X-Forwarded-Proto is the sidecar\'s');
});

t.test('HTTP/1.1 a request line with two spaces: rejected, or forwarded once with a normal request line', async (t) => {
  // RFC 9112 §3 lets a recipient parse the request line on whitespace
  // boundaries; what matters is that the forwarded request is re-serialized.
  const o = await attempt(`GET  /two-spaces HTTP/1.1\r\n${HOST}\r\n`);
  const r = forwardedOnce(t, o, '');
  if (r) t.equal(r.target, '/two-spaces', 'the upstream got a well-formed request line');
});

t.test('HTTP/2 GET with a body and no content-length: the upstream gets one framed request', async (t) => {
  up.clear();
  const r = await h2Get(sc.tlsPort, ca, '/h2-body', { body: Buffer.from(SMUGGLED) });
  await new Promise((res) => setTimeout(res, 100));
  const o: Outcome = { status: r.status, closed: false, responses: 1, requests: [...up.requests], malformed: up.malformed, upstreamErrors: 0 };
  neverSmuggled(t, o);
  t.equal(o.requests.length, 1, 'one request upstream');
  t.equal(o.requests[0]?.target, '/h2-body');
  t.equal(o.requests[0]?.body.toString(), SMUGGLED, 'with the whole body, framed');
  t.equal(r.status, 200);
});

checkRecovered();
