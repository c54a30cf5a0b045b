// Issue 8 regression cases that need real kTLS, under kTLS TX and TX+RX, on
// the real sidecar (a child process: its fds come from /proc/<pid>/fd):
//  - connect-then-FIN without a byte (http and tcp mode): the slot and the fd
//    come back, and the connection is counted (accepted = rejected + handshake
//    failures + opened), so later TLS clients are still served;
//  - the upstream dying mid-body (Content-Length and chunked, HTTP/1.1 and
//    HTTP/2): the client's response is aborted at once, not at the idle
//    timeout, and counted as an upstream error; the HTTP/2 session lives on;
//  - a malformed request pipelined behind a 16 MiB response: the body arrives
//    intact (no 400 injected into it); an error answer may follow it only.
import t, { type Test } from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { type LabSidecar, SUITES, type Suite, labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';
import { expectedDirection } from './helpers/sidecar-matrix.js';
import { bytesSha, echoMatches, h1Get, procStats, suiteTlsOptions, tcpEcho, waitUntil } from './helpers/soak.js';

const SUITE = SUITES[0] as Suite; // TLS 1.3 AES-128-GCM: on kTLS in both directions wherever kTLS is
const MAX_CONNECTIONS = 4;
const FINS = MAX_CONNECTIONS + 3;
// Far beyond what a test waits: an abort that comes only at the idle timeout is a hang here.
const TIMEOUTS = { idle: '300s', upstreamResponse: '300s' };
// "At once" under TCG emulation: generous, and still an order of magnitude below timeouts.idle.
const ABORT_WITHIN_MS = 20_000;
const BIG = 16 * 1024 * 1024;
const DIE_AFTER = 1024 * 1024;

/** An HTTP/1.1 upstream: /bytes?n=N like test/helpers/upstream.ts; /die-cl and /die-chunked send 1 MiB then die. */
async function startDyingUpstream(t: Test): Promise<string> {
  const server = http.createServer((req, res) => {
    req.resume();
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/die-cl' || u.pathname === '/die-chunked') {
      res.writeHead(200, u.pathname === '/die-cl' ? { 'content-length': String(BIG) } : {});
      // The socket dies once the first MiB is on its way: mid-body, from the sidecar's point of view.
      res.write(patternBytes(DIE_AFTER, 5), () => res.socket?.destroy());
      return;
    }
    const data = patternBytes(Number(u.searchParams.get('n') ?? '0'), 7);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    let off = 0;
    const pump = (): void => {
      while (off < data.length) {
        const ok = res.write(data.subarray(off, off + 65536));
        off += 65536;
        if (!ok) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function counters(sc: LabSidecar): Promise<{ accepted: number; settled: number }> {
  const m = await sc.metrics();
  const sum = (name: string): number => {
    let n = 0;
    for (const line of m.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) n += Number(line.split(' ').pop());
    return n;
  };
  return {
    accepted: sum('ktls_sidecar_connections_accepted_total'),
    settled: sum('ktls_sidecar_connections_rejected_total') + sum('ktls_sidecar_handshake_failures_total') + sum('ktls_sidecar_connections_opened_total'),
  };
}

/** Connect, send FIN without a byte; resolves true when the sidecar closes its side too (within `ms`). */
function connectThenFin(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, ms);
    s.on('error', () => undefined);
    s.on('connect', () => s.end());
    s.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    s.resume();
  });
}

async function connectFinCase(t: Test, sc: LabSidecar, served: () => Promise<boolean>, ktls: Record<string, string>): Promise<void> {
  const pid = sc.proc.pid ?? 0;
  const before = procStats(pid);
  const c0 = await counters(sc);
  const closed = await Promise.all(Array.from({ length: FINS }, () => connectThenFin(sc.tlsPort, 10_000)));
  t.equal(closed.filter(Boolean).length, FINS, `the sidecar closed all ${FINS} connect-then-FIN connections`);
  const balanced = await waitUntil(async () => {
    const c = await counters(sc);
    return c.accepted - c0.accepted === FINS && c.settled - c0.settled === FINS;
  }, 10_000);
  const c1 = await counters(sc);
  t.ok(balanced, `each is counted once: accepted +${c1.accepted - c0.accepted} = rejected + handshake failures + opened +${c1.settled - c0.settled}`);
  const fdsBack = await waitUntil(() => procStats(pid).fds <= before.fds, 10_000);
  t.ok(fdsBack, `fds back (${before.fds} -> ${procStats(pid).fds})`);
  const on0 = await sc.metric('ktls_sidecar_connections_opened_total', ktls);
  t.ok(await served(), `a TLS client is served after ${FINS} connect-then-FIN > limits.maxConnections ${MAX_CONNECTIONS}`);
  t.equal((await sc.metric('ktls_sidecar_connections_opened_total', ktls)) - on0, 1, `that client is on kTLS (${JSON.stringify(ktls)})`);
}

/** HTTP/1.1 GET of a dying path: resolves with the bytes seen and how long after the first byte the response ended. */
function h1Dying(port: number, ca: Buffer, path: string): Promise<{ bytes: number; complete: boolean; ms: number }> {
  return new Promise((resolve) => {
    let first = 0;
    let bytes = 0;
    const req = https.request({ host: '127.0.0.1', port, path, servername: 'localhost', ca, agent: false, ...suiteTlsOptions(SUITE) }, (res) => {
      res.on('data', (d: Buffer) => {
        first ||= Date.now();
        bytes += d.length;
      });
      res.on('error', () => undefined);
      res.on('close', () => resolve({ bytes, complete: res.complete, ms: Date.now() - (first || Date.now()) }));
    });
    req.on('error', () => resolve({ bytes, complete: false, ms: Date.now() - (first || Date.now()) }));
    req.setTimeout(ABORT_WITHIN_MS + 5000, () => req.destroy());
    req.end();
  });
}

/** HTTP/2 GET of a dying path on `session`: the bytes seen, the RST_STREAM code, whether we gave up, and how long after the first byte. */
function h2Dying(session: http2.ClientHttp2Session, path: string): Promise<{ bytes: number; rst: number | undefined; gaveUp: boolean; ms: number }> {
  return new Promise((resolve) => {
    let first = 0;
    let bytes = 0;
    let gaveUp = false;
    const req = session.request({ ':path': path });
    req.on('data', (d: Buffer) => {
      first ||= Date.now();
      bytes += d.length;
    });
    req.on('error', () => undefined);
    req.on('close', () => resolve({ bytes, rst: req.rstCode, gaveUp, ms: Date.now() - (first || Date.now()) }));
    req.setTimeout(ABORT_WITHIN_MS + 5000, () => {
      gaveUp = true;
      req.close(http2.constants.NGHTTP2_CANCEL);
    });
    req.end();
  });
}

async function upstreamDiesCase(t: Test, sc: LabSidecar, ca: Buffer): Promise<void> {
  for (const path of ['/die-cl', '/die-chunked']) {
    const errs0 = await sc.metric('ktls_sidecar_upstream_errors_total');
    const r = await h1Dying(sc.tlsPort, ca, path);
    t.ok(!r.complete && r.bytes < BIG, `HTTP/1.1 ${path}: the response is cut (${r.bytes} B), not completed`);
    t.ok(r.ms < ABORT_WITHIN_MS, `HTTP/1.1 ${path}: aborted ${r.ms} ms after the first byte (< ${ABORT_WITHIN_MS} ms; idle timeout 300 s)`);
    t.ok(await waitUntil(async () => (await sc.metric('ktls_sidecar_upstream_errors_total')) > errs0, 5_000), `HTTP/1.1 ${path}: counted as an upstream error`);
  }
  const session = http2.connect(`https://127.0.0.1:${sc.tlsPort}`, { servername: 'localhost', ca, ...suiteTlsOptions(SUITE) });
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  for (const path of ['/die-cl', '/die-chunked']) {
    const errs0 = await sc.metric('ktls_sidecar_upstream_errors_total');
    const r = await h2Dying(session, path);
    // A clean END_STREAM after a cut body would pass a truncated response off as whole: it must be a reset.
    t.ok(!r.gaveUp && r.rst !== undefined && r.rst !== http2.constants.NGHTTP2_NO_ERROR && r.bytes < BIG, `HTTP/2 ${path}: the stream is reset by the sidecar (${r.bytes} B, rst code ${r.rst})`);
    t.ok(r.ms < ABORT_WITHIN_MS, `HTTP/2 ${path}: aborted ${r.ms} ms after the first byte (< ${ABORT_WITHIN_MS} ms)`);
    t.ok(await waitUntil(async () => (await sc.metric('ktls_sidecar_upstream_errors_total')) > errs0, 5_000), `HTTP/2 ${path}: counted as an upstream error`);
  }
  const after = await h2Body(session, '/bytes?n=65536');
  t.equal(sha256(after), bytesSha(65536), 'HTTP/2: the session still serves other streams');
  session.close();
}

function h2Body(session: http2.ClientHttp2Session, path: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const req = session.request({ ':path': path });
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('error', () => undefined);
    req.on('close', () => resolve(Buffer.concat(chunks)));
    req.setTimeout(30_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
    req.end();
  });
}

/** Decode one HTTP/1.1 response (Content-Length or chunked) at the start of `raw`; throws where the framing breaks. */
function parseResponse(raw: Buffer): { status: number; body: Buffer; rest: Buffer } {
  const headEnd = raw.indexOf('\r\n\r\n');
  if (headEnd < 0) throw new Error(`no complete response head in ${raw.length} B`);
  const head = raw.subarray(0, headEnd).toString('latin1');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
  let off = headEnd + 4;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl) return { status, body: raw.subarray(off, off + Number(cl[1])), rest: raw.subarray(off + Number(cl[1])) };
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(head)) throw new Error(`neither content-length nor chunked: ${head}`);
  const parts: Buffer[] = [];
  for (;;) {
    const lineEnd = raw.indexOf('\r\n', off);
    const sizeText = raw.subarray(off, lineEnd).toString('latin1');
    if (lineEnd < 0 || !/^[0-9a-fA-F]+$/.test(sizeText)) throw new Error(`chunk framing broken at offset ${off}: ${JSON.stringify(raw.subarray(off, off + 40).toString('latin1'))}`);
    const size = parseInt(sizeText, 16);
    off = lineEnd + 2;
    if (size === 0) return { status, body: Buffer.concat(parts), rest: raw.subarray(raw.indexOf('\r\n', off) + 2) };
    parts.push(raw.subarray(off, off + size));
    off += size;
    if (raw.subarray(off, off + 2).toString('latin1') !== '\r\n') throw new Error(`chunk of ${size} B not followed by CRLF at offset ${off}`);
    off += 2;
  }
}

async function pipelineCase(t: Test, sc: LabSidecar, ca: Buffer): Promise<void> {
  const sock = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, servername: 'localhost', ca, ...suiteTlsOptions(SUITE) });
  t.teardown(() => sock.destroy());
  await once(sock, 'secureConnect');
  const chunks: Buffer[] = [];
  let received = 0;
  let injected = false;
  const done = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 120_000);
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      // The malformed request arrives while the 16 MiB response is being written.
      if (!injected && received >= 256 * 1024) {
        injected = true;
        sock.write('GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n');
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  sock.write(`GET /bytes?n=${BIG} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  const closed = await done;
  const raw = Buffer.concat(chunks);
  t.ok(injected, 'the malformed request went out mid-response');
  t.ok(closed, 'the connection is closed after the response');
  let parsed: ReturnType<typeof parseResponse> | undefined;
  try {
    parsed = parseResponse(raw);
  } catch (err) {
    t.fail(`the 16 MiB response is well framed: ${(err as Error).message}`);
  }
  if (!parsed) return;
  t.equal(parsed.status, 200, 'first response 200');
  t.equal(parsed.body.length, BIG, '16 MiB body, every byte');
  t.equal(sha256(parsed.body), bytesSha(BIG), '16 MiB body intact (sha256): nothing injected');
  const rest = parsed.rest.toString('latin1');
  t.ok(rest === '' || rest.startsWith('HTTP/1.1 400'), `after the body: nothing or a whole error answer (${JSON.stringify(rest.slice(0, 40))})`);
}

// One http-mode sidecar per direction serves three cases (each sidecar start costs seconds under TCG); the
// connect-then-FIN case runs last there, so a slot leaked by it cannot fail the others.
for (const direction of ['tx', 'txrx'] as const) {
  t.test(`kTLS ${direction}: hardening regressions`, { skip: labSkip }, async (t) => {
    const probe = await probeKernel({ skipNicOffload: true });
    t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
    const onLabels = { ktls: 'on', direction: expectedDirection(probe, SUITE, direction) };
    const ca = readFileSync(labPki().caCert);
    const ktls = { enabled: true, direction };
    const limits = { maxConnections: MAX_CONNECTIONS };
    const url = await startDyingUpstream(t);
    const sc = await startLabSidecar(t, { upstream: { url }, ktls, limits, timeouts: TIMEOUTS });

    await t.test('upstream dies mid-body: the client response is aborted at once', async (t) => {
      const on0 = await sc.metric('ktls_sidecar_connections_opened_total', onLabels);
      await upstreamDiesCase(t, sc, ca);
      t.equal((await sc.metric('ktls_sidecar_connections_opened_total', onLabels)) - on0, 3, 'all three client connections were on kTLS');
    });

    await t.test('malformed request pipelined mid-response: 16 MiB body intact', async (t) => {
      const on0 = await sc.metric('ktls_sidecar_connections_opened_total', onLabels);
      await pipelineCase(t, sc, ca);
      t.equal((await sc.metric('ktls_sidecar_connections_opened_total', onLabels)) - on0, 1, 'the connection was on kTLS');
      t.equal(sc.proc.exitCode, null, 'the sidecar is alive');
    });

    await t.test('http mode: connect-then-FIN returns slot and fd, counted', async (t) => {
      const served = async (): Promise<boolean> => (await h1Get(sc.tlsPort, ca, SUITE, '/bytes?n=65536', 60_000).catch(() => undefined))?.sha256 === bytesSha(65536);
      await connectFinCase(t, sc, served, onLabels);
    });

    await t.test('tcp mode: connect-then-FIN returns slot and fd, counted', async (t) => {
      const up = await startTcpUpstream(false);
      t.teardown(() => up.close());
      const tcp = await startLabSidecar(t, { mode: 'tcp', upstream: { address: `127.0.0.1:${up.port}` }, ktls, limits });
      const data = patternBytes(65536, 9);
      const served = async (): Promise<boolean> => echoMatches(data, await tcpEcho(tcp.tlsPort, ca, SUITE, data, 60_000).catch(() => Buffer.alloc(0)));
      await connectFinCase(t, tcp, served, onLabels);
    });
  });
}
