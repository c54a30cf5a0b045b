// What every adversarial group checks about the sidecar child process: its
// open file descriptors and resident memory (read from /proc/<pid>) return to
// the baseline taken after a warm-up, it is still alive, it still serves a
// normal request, and no connection is left in its gauge.
import fs from 'node:fs';
import https from 'node:https';
import type { Test } from 'tap';
import { request } from '../../helpers/client.js';
import { metricValue } from '../../helpers/metrics.js';
import type { RunningSidecar } from '../../helpers/sidecar.js';
import { h2Get } from './raw.js';
import type { RecordingUpstream } from './recording-upstream.js';

export interface Usage {
  fds: number;
  rssBytes: number;
  /** fd targets by kind (socket, pipe, anon_inode:[eventpoll], a path), for failure messages. */
  kinds: Record<string, number>;
}

/**
 * RSS may grow this much over a group and stay grown: V8 keeps the heap it
 * expanded into for hundreds of connections, and glibc keeps freed arenas, so
 * RSS does not come back down the way fds do. 20 MiB is far above that
 * (measured here: 0 to 9 MiB per group) and far below what a leak of the attack's
 * buffers would cost (one 16 MiB response body, 500 connections' TLS state).
 */
export const RSS_SLACK_BYTES = 20 * 1024 * 1024;

export function usage(pid: number): Usage {
  const kinds: Record<string, number> = {};
  const dir = `/proc/${pid}/fd`;
  let fds = 0;
  for (const fd of fs.readdirSync(dir)) {
    let target: string;
    try {
      target = fs.readlinkSync(`${dir}/${fd}`);
    } catch {
      continue; // closed between readdir and readlink
    }
    fds++;
    const kind = target.replace(/:\[\d+\]$/, '');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 'NaN');
  return { fds, rssBytes: kib * 1024, kinds };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `check` every 100 ms until it is true or `ms` pass; returns its last answer. */
export async function eventually(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= until) return false;
    await sleep(100);
  }
}

/** Sum of ktls_sidecar_connections_active over every label set. */
export async function activeConnections(sc: RunningSidecar): Promise<number> {
  return metricValue(await sc.metrics(), 'ktls_sidecar_connections_active');
}

/**
 * Exercise every path the attacks will touch once (TLS 1.2 and 1.3
 * handshakes, HTTP/1.1 and HTTP/2 requests, an upstream connection, the
 * admin server) so lazily created fds exist before the baseline, then wait
 * until the upstream's idle close has emptied the sidecar's pool.
 */
export async function warmBaseline(sc: RunningSidecar, ca: string, up?: RecordingUpstream): Promise<Usage> {
  for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
    const agent = new https.Agent({ minVersion: v, maxVersion: v, ca: fs.readFileSync(ca) });
    const r = await request(sc.tlsPort, { ca, agent });
    agent.destroy();
    if (r.status !== 200) throw new Error(`warm-up request over ${v}: ${r.status}`);
  }
  await h2Get(sc.tlsPort, ca, '/');
  await sc.metrics();
  if (up) await eventually(() => up.open === 0, 5000);
  await eventually(async () => (await activeConnections(sc)) === 0, 5000);
  await sleep(200);
  return usage(Number(sc.proc.pid));
}

export interface RecoveryOptions {
  up?: RecordingUpstream;
  /** How long open connections may take to end (timeouts the group configured), ms. */
  settleMs?: number;
}

/**
 * One t.test: after the group's attacks and a settle, the fd count equals the
 * baseline exactly, RSS is within RSS_SLACK_BYTES, the process is alive, a
 * normal request succeeds and no connection is left open in the gauge.
 */
export function checkRecovered(t: Test, sc: RunningSidecar, base: () => Usage, ca: string, o: RecoveryOptions = {}): void {
  t.test('afterwards: alive, serving, fds back to baseline, RSS bounded, no open connection', async (t) => {
    const pid = Number(sc.proc.pid);
    const b = base();
    t.equal(sc.proc.exitCode, null, 'the sidecar process is alive');
    t.equal(sc.proc.signalCode, null, 'and was not killed by a signal');
    const settleMs = o.settleMs ?? 8000;
    // The upstream closes idle pooled sockets after its keep-alive; wait for that first.
    if (o.up) t.ok(await eventually(() => o.up?.open === 0, settleMs), `upstream connections closed (open: ${o.up.open})`);
    t.ok(await eventually(async () => (await activeConnections(sc)) === 0, settleMs), 'connections_active back to 0');
    let now = usage(pid);
    await eventually(() => (now = usage(pid)).fds === b.fds, settleMs);
    t.equal(now.fds, b.fds, `fd count back to baseline (now ${JSON.stringify(now.kinds)}, baseline ${JSON.stringify(b.kinds)})`);
    t.ok(now.rssBytes <= b.rssBytes + RSS_SLACK_BYTES, `RSS ${mib(now.rssBytes)} MiB within baseline ${mib(b.rssBytes)} + ${mib(RSS_SLACK_BYTES)} MiB`);
    // Bounded: a sidecar whose upstream sockets all leaked would queue it forever.
    const status = await Promise.race([request(sc.tlsPort, { ca }).then((r) => r.status), sleep(10_000).then(() => 0)]);
    t.equal(status, 200, 'a normal request is served (0: no answer in 10 s)');
  });
}

export function mib(n: number): string {
  return (n / 1024 / 1024).toFixed(1);
}
