// HTTP/2 abuse: streams past limits.maxConcurrentStreams, a flood of streams
// against a hanging upstream path (upstream.maxSockets / maxPending), rapid
// reset (HEADERS + RST_STREAM loop) and a CONTINUATION flood. Each ends in a
// specific answer (REFUSED_STREAM, 503 counted `overloaded`, GOAWAY/close)
// and the upstream never sees more than upstream.maxSockets connections.
import fs from 'node:fs';
import http2 from 'node:http2';
import t from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { FLAG, FRAME, frame, H2_CANCEL, H2_REFUSED_STREAM, hpack, rawH2, requestBlock } from './helpers/raw.js';
import { eventually } from './helpers/resources.js';
import { startAttackStand } from './helpers/stand.js';

const MAX_STREAMS = 10;
const MAX_SOCKETS = 4;
const MAX_PENDING = 8;

const { up, sc, ca, checkRecovered } = await startAttackStand(t, [
  '--limits-max-concurrent-streams', String(MAX_STREAMS),
  '--upstream-max-sockets', String(MAX_SOCKETS),
  '--upstream-max-pending', String(MAX_PENDING),
  // Long enough for every case against /hang, short enough that a case which
  // leaks its upstream requests (asserted there, within 3 s) does not starve
  // the next cases of upstream sockets too.
  '--timeouts-upstream-response', '8s',
]);
// Each case starts with no upstream connection left from the one before, so
// its upstream peak is its own (a leak was already reported by that case; its
// requests end at timeouts.upstreamResponse at the latest).
t.beforeEach(async (t) => {
  t.ok(await eventually(() => up.open === 0, 9000), `no upstream connection left over (open: ${up.open})`);
  up.clear();
  up.resetPeak();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hangHeaders = (id: number): Buffer => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock('/hang'));

t.test(`streams past limits.maxConcurrentStreams (${MAX_STREAMS}) in a first flight are refused with REFUSED_STREAM`, async (t) => {
  // A fast client (h2load -m N) sends its streams before it has seen the
  // server's SETTINGS: the limit then applies as REFUSED_STREAM per stream.
  const extra = 5;
  const ids = Array.from({ length: MAX_STREAMS + extra }, (_, i) => 2 * i + 1);
  const h2 = await rawH2(sc.tlsPort, ca, Buffer.concat(ids.map(hangHeaders)));
  t.teardown(() => h2.socket.destroy());
  await eventually(() => h2.resets.size >= extra, 3000);
  const refused = [...h2.resets].filter(([, code]) => code === H2_REFUSED_STREAM).map(([id]) => id);
  t.same(refused, ids.slice(MAX_STREAMS), `exactly the ${extra} streams over the limit are refused (resets: ${JSON.stringify([...h2.resets])})`);
  t.equal(h2.isClosed(), false, 'the session itself stays up');
  t.ok(up.peak <= MAX_SOCKETS, `upstream connections ≤ upstream.maxSockets (peak ${up.peak})`);
  h2.socket.destroy();
  t.ok(await eventually(() => up.open === 0, 3000), `closing the connection ends its streams' upstream requests (open: ${up.open})`);
});

t.test('a client that ignores the acknowledged stream limit: excess streams refused or the session closed; the upstream never sees more', async (t) => {
  const h2 = await rawH2(sc.tlsPort, ca);
  t.teardown(() => h2.socket.destroy());
  const ids = Array.from({ length: MAX_STREAMS + 5 }, (_, i) => 2 * i + 1);
  h2.write(Buffer.concat(ids.map(hangHeaders)));
  // RFC 9113 5.1.2: a stream error (PROTOCOL_ERROR or REFUSED_STREAM); node:http2 closes the whole session.
  const handled = await eventually(() => h2.isClosed() || h2.resets.size >= 5, 3000);
  t.ok(handled, `refused (${JSON.stringify([...h2.resets])}) or closed (${h2.isClosed()})`);
  t.ok(up.peak <= MAX_SOCKETS, `upstream connections ≤ upstream.maxSockets (peak ${up.peak})`);
  t.ok(up.requests.length <= MAX_STREAMS, `at most ${MAX_STREAMS} requests reached the upstream (${up.requests.length})`);
  t.equal(sc.proc.exitCode, null, 'the sidecar is alive');
  h2.socket.destroy();
  t.ok(await eventually(() => up.open === 0, 3000), `closing the connection ends its streams' upstream requests (open: ${up.open})`);
});

t.test(`streams against a hanging upstream path: ≤ ${MAX_SOCKETS} upstream sockets, ${MAX_PENDING} wait, the rest get 503 counted overloaded`, async (t) => {
  const before = metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'overloaded' });
  const statuses: number[] = [];
  const sessions = [0, 1].map(() => http2.connect(`https://localhost:${sc.tlsPort}`, { ca: fs.readFileSync(ca) }));
  t.teardown(() => sessions.forEach((s) => s.destroy()));
  for (const s of sessions) {
    s.on('error', () => undefined);
    for (let i = 0; i < MAX_STREAMS; i++) {
      const req = s.request({ ':path': `/hang?s=${i}` });
      req.on('response', (h) => statuses.push(Number(h[':status'])));
      req.on('error', () => undefined);
      req.resume();
    }
  }
  const total = 2 * MAX_STREAMS;
  const overflow = total - MAX_SOCKETS - MAX_PENDING;
  await eventually(() => statuses.length >= overflow, 5000);
  await sleep(300); // nothing more should come: the rest hang upstream or wait for a socket
  t.same(statuses, Array<number>(overflow).fill(503), `${overflow} streams answered 503 at once, the others wait`);
  t.ok(up.peak <= MAX_SOCKETS, `upstream connections ≤ upstream.maxSockets (peak ${up.peak})`);
  t.ok(up.requests.length <= MAX_SOCKETS, `only streams holding an upstream socket reached the upstream (${up.requests.length})`);
  const after = metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'overloaded' });
  t.equal(after - before, overflow, 'each 503 counted as upstream error overloaded');
  sessions.forEach((s) => s.destroy());
  t.ok(await eventually(() => up.open === 0, 3000), `closing the sessions ends their streams' upstream requests (open: ${up.open})`);
});

t.test('rapid reset (5000 × HEADERS + RST_STREAM) ends in GOAWAY or close; the process survives', async (t) => {
  const h2 = await rawH2(sc.tlsPort, ca);
  t.teardown(() => h2.socket.destroy());
  const pairs = 5000;
  for (let i = 0; i < pairs && !h2.isClosed(); i += 100) {
    const batch: Buffer[] = [];
    for (let id = 2 * i + 1; id < 2 * (i + 100) + 1; id += 2) {
      batch.push(hangHeaders(id), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, H2_CANCEL])));
    }
    await h2.send(Buffer.concat(batch));
  }
  const ended = await eventually(() => h2.goaway !== undefined || h2.isClosed(), 5000);
  t.ok(ended, `the session got GOAWAY (code ${String(h2.goaway)}) or was closed`);
  t.ok(up.peak <= MAX_SOCKETS, `upstream connections ≤ upstream.maxSockets (peak ${up.peak})`);
  t.equal(sc.proc.exitCode, null, 'the sidecar is alive');
});

t.test('CONTINUATION flood (HEADERS without END_HEADERS + 10000 CONTINUATION) ends in GOAWAY or close', async (t) => {
  const h2 = await rawH2(sc.tlsPort, ca);
  t.teardown(() => h2.socket.destroy());
  h2.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, requestBlock('/flood')));
  for (let i = 0; i < 10_000 && !h2.isClosed(); i += 500) {
    const batch: Buffer[] = [];
    for (let j = i; j < i + 500; j++) batch.push(frame(FRAME.CONTINUATION, 0, 1, hpack([[`x-flood-${j}`, 'v']])));
    await h2.send(Buffer.concat(batch));
  }
  const ended = await eventually(() => h2.goaway !== undefined || h2.isClosed(), 5000);
  t.ok(ended, `the session got GOAWAY (code ${String(h2.goaway)}) or was closed`);
  t.equal(up.requests.length, 0, 'nothing reached the upstream');
  t.equal(sc.proc.exitCode, null, 'the sidecar is alive');
});

checkRecovered(9000);
