// Soak: the real sidecar (a child process, so a crash is an exit) under
// concurrent 8 MiB downloads while PUT /ktls flips the flag every few
// seconds (issue 8, item 0: ERR_INTERNAL_ASSERTION at JSStreamSocket.doWrite
// killed the process). One run mixes every record layer: the kTLS allow-list
// gives AES-128-GCM txrx and AES-256-GCM tx, ChaCha20 is left out so its
// clients end in userspace through the handshake engine (cipher_not_allowed:
// the crash path), and a flip mid-handshake sends others there too (flag_off).
// Clients: TLS 1.3 AES-128/256-GCM and ChaCha20, TLS 1.2 ECDHE AES-GCM and
// ChaCha20, over HTTP/1.1 and HTTP/2 (one new connection per download), then
// a tcp-mode sidecar with an echo upstream. One download in four (worker 1's
// first, worker 0's second, ...) is abandoned mid-body by the client: the
// sidecar is still writing when the connection goes, the write-after-shutdown
// shape of the crash; those are not counted as transfers. Checked: every
// other body's sha256, the listener answering after every flip, the process
// alive at the end, and its fd count and RSS back near where they started
// (figures as TAP comments).
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { type LabSidecar, SUITES, type Suite, labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';
import { NotProcessedError, type ProcStats, abandonGet, bytesSha, echoMatches, h1Get, h2Get, labKernelAtLeast7, procStats, sleep, tcpEcho, waitUntil } from './helpers/soak.js';

// The long soak on 7.x, a shorter one on 6.1 (CI's per-kernel budget); KTLS_SOAK_SECONDS overrides both phases.
const LONG = labKernelAtLeast7();
const override = Number(process.env['KTLS_SOAK_SECONDS'] ?? '');
// (Downloads in flight at the deadline still finish: under TCG an 8 MiB body can take ~20 s.)
const HTTP_SECONDS = override > 0 ? override : LONG ? 40 : 20;
const TCP_SECONDS = override > 0 ? override : LONG ? 15 : 10;
const FLIP_MS = 2500;
const BODY = 8 * 1024 * 1024;
const ECHO = 1024 * 1024;
const ABANDON_AFTER = 512 * 1024;
const HTTP_WORKERS = 6;
const TCP_WORKERS = 4;
const REQUEST_TIMEOUT_MS = 90_000;
const PROBE_TIMEOUT_MS = 30_000;
// At least two offs and two ons under load.
const MIN_FLIPS = 4;
const GRACE_MS = 30_000;
// Slack for fds the process legitimately keeps: idle keep-alive upstream sockets (up to one per concurrent request)
// and what libuv opens once. A leak is one or more per connection, hundreds over the run.
const FD_SLACK = 12;
// RSS: V8 keeps heap it grew into; a per-connection leak of buffers over hundreds of 8 MiB bodies is far above this.
const RSS_SLACK_KIB = 128 * 1024;

// Allowed on kTLS with a per-suite direction; the ChaCha20 suites are NOT listed: userspace via the engine.
const KTLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256:txrx',
  'TLS_AES_256_GCM_SHA384:tx',
  'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:txrx',
  'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:tx',
];
// drainTimeout longer than a download: a flip off asks kTLS connections to finish (Connection: close / GOAWAY),
// it must not cut a body in flight.
const KTLS = { enabled: true, direction: 'txrx', ciphers: KTLS_CIPHERS, drainTimeout: '300s' };
// Under TCG with six bodies in flight a handshake can take longer than the 10 s default: that is emulation, not the
// flag flips under test.
const TIMEOUTS = { handshake: '60s' };

interface Tally {
  ok: number;
  bytes: number;
  abandoned: number;
  /** h2 requests a drain's GOAWAY refused unprocessed, retried once (RFC 9113 §8.7). */
  retried: number;
  failures: string[];
}

interface Run {
  sc: LabSidecar;
  exit: { code: number | null; signal: string | null } | undefined;
  stop: boolean;
  flips: number;
}

/** Track the child's exit: a crash ends the load at once instead of timing every request out. */
function watch(sc: LabSidecar): Run {
  const run: Run = { sc, exit: undefined, stop: false, flips: 0 };
  sc.proc.once('exit', (code, signal) => {
    run.exit = { code, signal };
    run.stop = true;
  });
  return run;
}

function alive(run: Run): boolean {
  return run.exit === undefined && run.sc.proc.exitCode === null && run.sc.proc.signalCode === null;
}

/**
 * Flip the flag every FLIP_MS until the run stops; after each flip a new
 * connection must be served (`probe`). Resolves with the flip count and
 * what went wrong.
 */
async function flipper(run: Run, probe: () => Promise<string | undefined>): Promise<{ flips: number; probesOk: number; errors: string[] }> {
  let enabled = true;
  let flips = 0;
  let probesOk = 0;
  const errors: string[] = [];
  while (!run.stop) {
    await sleep(FLIP_MS);
    if (run.stop) break;
    enabled = !enabled;
    try {
      await run.sc.setKtls(enabled);
      run.flips = ++flips;
      const problem = await probe();
      if (problem === undefined) probesOk++;
      else errors.push(`flip ${flips} (flag ${enabled ? 'on' : 'off'}): the probe connection was not served: ${problem}${closeLineOf(run.sc, problem)}`);
    } catch (err) {
      errors.push(`flip ${flips + 1}: ${(err as Error).message}`);
      if (!alive(run)) break;
    }
  }
  // Leave the flag on, as it started.
  if (!enabled && alive(run)) await run.sc.setKtls(true).catch(() => undefined);
  return { flips, probesOk, errors };
}

/**
 * What the sidecar logged about the connection a probe error names ("client
 * port N"): its connection_closed line, to tell a refused handshake from a
 * reset mid-response when a probe fails.
 */
function closeLineOf(sc: LabSidecar, problem: string): string {
  const port = /client port (\d+)/.exec(problem)?.[1];
  if (!port) return '';
  const line = sc.logs.find((l) => l.event === 'connection_closed' && typeof l['remote'] === 'string' && l['remote'].endsWith(`:${port}`));
  return line ? `; sidecar: ${JSON.stringify(line).slice(0, 600)}` : '; sidecar: no connection_closed line for it yet';
}

/**
 * Run `worker(w, k)` for k = 0, 1, ... in `n` parallel loops until the
 * deadline, and past it until MIN_FLIPS flips happened under load (an
 * emulated CPU on a busy host may be slow to flip), at most GRACE_MS more.
 */
async function loadLoops(run: Run, n: number, deadline: number, worker: (w: number, k: number) => Promise<void>): Promise<void> {
  const more = (): boolean => !run.stop && (Date.now() < deadline || (run.flips < MIN_FLIPS && Date.now() < deadline + GRACE_MS));
  await Promise.all(
    Array.from({ length: n }, async (_, w) => {
      for (let k = 0; more(); k++) await worker(w, k);
    }),
  );
}

/** Wait for every connection to close, then read the process' fds and RSS. */
async function settledStats(t: Test, sc: LabSidecar): Promise<ProcStats> {
  const idle = await waitUntil(async () => (await sc.metric('ktls_sidecar_connections_active')) === 0, 60_000);
  t.ok(idle, 'no connection left active');
  return procStats(sc.proc.pid ?? 0);
}

function report(t: Test, name: string, run: Run, before: ProcStats, after: ProcStats | undefined): void {
  if (run.exit) t.comment(`${name}: sidecar EXITED code=${run.exit.code} signal=${run.exit.signal}; stderr tail: ${run.sc.stderr().slice(-1500)}`);
  t.equal(run.exit, undefined, `${name}: the sidecar process is alive (no exit)`);
  if (!after) return;
  t.comment(`${name}: fds ${before.fds} -> ${after.fds}, RSS ${Math.round(before.rssKiB / 1024)} -> ${Math.round(after.rssKiB / 1024)} MiB`);
  t.ok(after.fds <= before.fds + FD_SLACK, `${name}: fd count back near the start (${before.fds} -> ${after.fds})`);
  t.ok(after.rssKiB <= before.rssKiB + RSS_SLACK_KIB, `${name}: RSS back near the start (${before.rssKiB} -> ${after.rssKiB} KiB)`);
}

/** On failures: the sidecar's lines about connections that ended in error or were refused, and its warnings. */
function commentTrouble(t: Test, name: string, sc: LabSidecar, failures: number): void {
  if (failures === 0) return;
  const calm = new Set(['client_close', 'upstream_close', 'ktls_drain', 'shutdown']);
  const lines = sc.logs.filter((l) => (l.event === 'connection_closed' && !calm.has(String(l['close_reason']))) || l.level === 'warn' || l.level === 'error');
  for (const l of lines.slice(-12)) t.comment(`${name}: sidecar said: ${JSON.stringify({ ...l, ktls_info: undefined, time: undefined, name: undefined }).slice(0, 700)}`);
}

/** Per-(ktls, ktls_reason) counts of opened connections: shows the run really mixed the record layers. */
async function layerMix(sc: LabSidecar, protocol: string): Promise<string> {
  const parts: string[] = [];
  for (const [ktls, reason] of [['on', 'enabled'], ['off', 'cipher_not_allowed'], ['off', 'flag_off']] as const) {
    parts.push(`${ktls}/${reason}=${await sc.metric('ktls_sidecar_connections_opened_total', { ktls, ktls_reason: reason, protocol })}`);
  }
  return parts.join(' ');
}

t.test('http mode: HTTP/1.1 + HTTP/2 8 MiB downloads, mixed suites, flag flipped under load', { skip: labSkip }, async (t) => {
  const ca = readFileSync(labPki().caCert);
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, { upstream: { url: upstream.url }, ktls: KTLS, timeouts: TIMEOUTS });
  const run = watch(sc);
  const want = bytesSha(BODY);
  const probeSha = bytesSha(4096);
  const suiteOf = (w: number, k: number): Suite => SUITES[(w + k) % SUITES.length] as Suite;
  const get = (w: number, s: Suite, path: string): ReturnType<typeof h2Get> =>
    w % 3 === 2 ? h1Get(sc.tlsPort, ca, s, path, REQUEST_TIMEOUT_MS) : h2Get(sc.tlsPort, ca, s, path, REQUEST_TIMEOUT_MS);

  // Warm-up: every suite once on each protocol, so the baseline includes what the process allocates once.
  for (const s of SUITES) for (const w of [0, 2]) await get(w, s, '/bytes?n=65536');
  const before = await settledStats(t, sc);

  const tally: Tally = { ok: 0, bytes: 0, abandoned: 0, retried: 0, failures: [] };
  const deadline = Date.now() + HTTP_SECONDS * 1000;
  let upstream502 = 0;
  const flips = flipper(run, async () => {
    const r = await h1Get(sc.tlsPort, ca, SUITES[0] as Suite, '/bytes?n=4096', PROBE_TIMEOUT_MS).catch((err: Error) => err.message);
    if (typeof r === 'string') return r;
    // 502: the listener served the probe, the upstream hop failed (its keep-alive race, counted and shown apart).
    if (r.status === 502) upstream502++;
    return (r.status === 200 && r.sha256 === probeSha) || r.status === 502 ? undefined : `status ${r.status}, ${r.length} B`;
  });
  await loadLoops(run, HTTP_WORKERS, deadline, async (w, k) => {
    const s = suiteOf(w, k);
    const proto = w % 3 === 2 ? 'h1' : 'h2';
    try {
      if ((w + k) % 4 === 1) {
        await abandonGet(sc.tlsPort, ca, s, `/bytes?n=${BODY}`, proto === 'h2', ABANDON_AFTER, REQUEST_TIMEOUT_MS);
        tally.abandoned++;
        return;
      }
      const r = await get(w, s, `/bytes?n=${BODY}`).catch(async (err: unknown) => {
        if (!(err instanceof NotProcessedError)) throw err;
        tally.retried++;
        return get(w, s, `/bytes?n=${BODY}`);
      });
      if (r.status === 200 && r.length === BODY && r.sha256 === want) {
        tally.ok++;
        tally.bytes += r.length;
      } else tally.failures.push(`${proto} ${s.iana}: status ${r.status}, ${r.length} B, sha ${r.sha256 === want ? 'ok' : 'WRONG'}`);
    } catch (err) {
      tally.failures.push(`${proto} ${s.iana}: ${(err as Error).message}`);
    }
  });
  run.stop = true;
  const f = await flips;

  t.comment(
    `http: ${HTTP_SECONDS} s, ${tally.ok} downloads of 8 MiB ok (${tally.bytes} B), ${tally.abandoned} abandoned by the client, ${tally.retried} retried after a GOAWAY refusal, ${tally.failures.length} failed, ${f.flips} flips, ${f.probesOk} probes served`,
  );
  t.comment(`http: opened h2 ${await layerMix(sc, 'h2').catch(() => '?')}; http1 ${await layerMix(sc, 'http1').catch(() => '?')}`);
  t.comment(`http: probes answered 502 by the sidecar (upstream hop failed): ${upstream502}`);
  commentTrouble(t, 'http', sc, tally.failures.length + f.errors.length);
  report(t, 'http', run, before, alive(run) ? await settledStats(t, sc) : undefined);
  t.same(tally.failures.slice(0, 10), [], 'every download complete and byte-exact (first 10 failures shown)');
  t.ok(tally.ok > 0, 'downloads ran');
  t.ok(f.flips >= MIN_FLIPS, `the flag was flipped under load (${f.flips})`);
  t.same(f.errors.slice(0, 10), [], 'the listener served a new connection after every flip');
});

t.test('tcp mode: 1 MiB echoes, mixed suites, flag flipped under load', { skip: labSkip }, async (t) => {
  const ca = readFileSync(labPki().caCert);
  const upstream = await startTcpUpstream(false);
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, { mode: 'tcp', upstream: { address: `127.0.0.1:${upstream.port}` }, ktls: { ...KTLS, drainOnDisable: 'keep' }, timeouts: TIMEOUTS });
  const run = watch(sc);
  const probeData = patternBytes(4096, 3);

  for (const s of SUITES) {
    const got = await tcpEcho(sc.tlsPort, ca, s, probeData, REQUEST_TIMEOUT_MS);
    t.ok(echoMatches(probeData, got), `warm-up echo ${s.iana}`);
  }
  const before = await settledStats(t, sc);

  const tally: Tally = { ok: 0, bytes: 0, abandoned: 0, retried: 0, failures: [] };
  const deadline = Date.now() + TCP_SECONDS * 1000;
  const flips = flipper(run, async () => {
    const got = await tcpEcho(sc.tlsPort, ca, SUITES[0] as Suite, probeData, PROBE_TIMEOUT_MS).catch((err: Error) => err.message);
    if (typeof got === 'string') return got;
    return echoMatches(probeData, got) ? undefined : `${got.length} B back`;
  });
  await loadLoops(run, TCP_WORKERS, deadline, async (w, k) => {
    const s = SUITES[(w + k) % SUITES.length] as Suite;
    const data = patternBytes(ECHO, 100 + w * 1000 + k);
    try {
      const got = await tcpEcho(sc.tlsPort, ca, s, data, REQUEST_TIMEOUT_MS);
      if (echoMatches(data, got)) {
        tally.ok++;
        tally.bytes += data.length;
      } else tally.failures.push(`tcp ${s.iana}: ${got.length} B back, sha ${sha256(got.subarray(0, data.length)) === sha256(data) ? 'ok' : 'WRONG'}`);
    } catch (err) {
      tally.failures.push(`tcp ${s.iana}: ${(err as Error).message}`);
    }
  });
  run.stop = true;
  const f = await flips;

  t.comment(`tcp: ${TCP_SECONDS} s, ${tally.ok} echoes of 1 MiB ok (${tally.bytes} B each way), ${tally.failures.length} failed, ${f.flips} flips, ${f.probesOk} probes served`);
  t.comment(`tcp: opened ${await layerMix(sc, 'tcp').catch(() => '?')}`);
  commentTrouble(t, 'tcp', sc, tally.failures.length + f.errors.length);
  report(t, 'tcp', run, before, alive(run) ? await settledStats(t, sc) : undefined);
  t.same(tally.failures.slice(0, 10), [], 'every echo complete and byte-exact (first 10 failures shown)');
  t.ok(tally.ok > 0, 'echoes ran');
  t.ok(f.flips >= MIN_FLIPS, `the flag was flipped under load (${f.flips})`);
  t.same(f.errors.slice(0, 10), [], 'the listener served a new connection after every flip');
});
