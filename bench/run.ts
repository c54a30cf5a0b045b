// Benchmark: the sidecar side by side with the TLS proxies a user would pick instead, in ONE run, with the same
// origin, client, certificate and TLS 1.3 suite (TLS_AES_128_GCM_SHA256), interleaved round by round.
//
//   npm run bench            on this host: nginx, node (plain https + http-proxy-3), sidecar
//   npm run bench:kernel     inside the QEMU lab on a kernel with the tls module: also nginx-ktls, sidecar-tx/txrx
//   node --import tsx bench/chart.ts <bench.json> docs/bench/host.svg      the chart of a run
//
// Method (docs/benchmark.md). Origin: bench/origin.c, compiled with cc at bench time (epoll, keep-alive, fixed
// bodies /1k /64k /1m /16m). Client: wrk -t1 -c8 keep-alive, its latency histogram read by a Lua done() hook.
// Pinning: every process of the proxy under test on core 0, wrk on core 1, the origin on core 2 if there is one
// (else with wrk); nothing pinned on a 1-core machine. Every system is started once and stays up; before measuring
// it must answer each path with 200 and the exact byte count over TLSv1.3 + the suite (the run stops otherwise),
// and it gets BENCH_WARMUP seconds of load per workload (JIT). CPU = utime+stime of all the proxy's processes
// (nginx master + worker, the sidecar's primary + workers) from /proc before and after each wrk run. Per cell:
// req/s, CPU µs/request, CPU s/GiB (bytes read by wrk), p50/p99 latency; medians [min..max] over rounds; ratios of
// each sidecar row to `node`, `nginx` (and to `sidecar`, for workers/kTLS variants). A sample with wrk errors
// (non-2xx, read/connect errors, timeouts) is reported and left out. A kTLS row is labelled by what the sidecar's
// /metrics and /proc/net/tls_stat say happened, never by what was configured.
//
// Knobs (environment):
//   BENCH_ROUNDS=3            rounds per workload (each round runs every system once)
//   BENCH_DURATION=5          seconds of load per sample
//   BENCH_WARMUP=2            seconds of load per system and workload before the rounds (not measured)
//   BENCH_WARMUP_ROUNDS=0     rounds run as the measured ones are (settle included) but not measured, first
//                             (lab default 2); like BENCH_SETTLE, only for the systems in JS (node, sidecar*)
//   BENCH_SETTLE=0            seconds of load right before each sample (not measured; lab default 20)
//                             The lab defaults of these two: under the emulated CPU, V8 had not finished optimising
//                             a sidecar in its first samples (its compiler threads took 15-37 % of the sidecar's
//                             CPU, and a system's 1 KiB samples spread by 40-50 %; from the fourth interleaved round
//                             on, 1-7 %, and one process's samples agreed within 1-6 %). A block of warm-up does
//                             not do it: a sidecar idle while the others warm up loses optimised code (deopts at
//                             idle GCs; docs/benchmark.md).
//   BENCH_FRESH=0             1: each measured round of a system in JS runs on a NEW process (stopped and started,
//                             checked again), warmed by BENCH_SETTLE-second blocks of load (20 s if 0) until V8's
//                             compiler threads (V8Worker) used at most BENCH_QUIET (0.08) of its CPU in a block, or
//                             BENCH_WARM_MAX (300) seconds; then sampled. Medians are then over processes: in the lab
//                             two warmed processes of one build settled a third apart per 1 KiB request
//                             (docs/ktls.md §9), so one process per system cannot decide a small ratio.
//                             Replaces BENCH_WARMUP_ROUNDS and the settle before each sample for those systems.
//   BENCH_WORKLOADS=1k,64k,1m,16m,conn   only these workloads (conn: 1 KiB with `Connection: close`, a new TLS
//                             connection per request; the others open wrk's connections once per sample)
//   BENCH_SYSTEMS=nginx,node,sidecar   only these systems, in this order; also: sidecar-w2 (config `workers: 2`),
//                             nginx-ktls, sidecar-tx, sidecar-txrx (kTLS: lab). A sidecar that does not start
//                             is reported "not available: <what it said>"; any other peer failing stops the run.
//   BENCH_SIDECAR_CLI=<file>  the sidecar entry point (default dist/proxy/cli.js), e.g. a baseline build
//   BENCH_OUT=<dir>           where bench.json (every sample) and bench.md (the tables) go (default: a temp
//                             dir; $KTLS_LAB_OUT/bench in the lab)
//   BENCH_CPU_DETAIL=1        also print, per sample, user/system CPU by thread name (a `bench-cpu` line)
//   BENCH_CHILD_LOGS=0        1: keep each sidecar process's whole stdout and stderr in <BENCH_OUT>/children/
//                             <system>-<pid>.log, with `bench-window begin|end …` lines where each measured window
//                             starts and ends (as the bench saw them: a line the child printed just before may follow
//                             them); for V8's --trace-opt / --trace-deopt / --trace-gc through KTLS_BENCH_SIDECAR_ARGS
//   KTLS_BENCH_SIDECAR_ARGS   extra node flags for the sidecar, split on whitespace, e.g. "--cpu-prof
//                             --cpu-prof-dir=/tmp/prof": every system is stopped with SIGTERM at the end, and the
//                             sidecar then gets 30 s (not 5) before SIGKILL to write such output; `bench-window`
//                             lines mark each measured window for bench/cpuprofile-top.ts --log.
// Flags: --kernel (lab mode: kTLS peers, no apt), --tools (install the tools, then exit: bench:kernel runs it
// on the host first, since the guest sees the host's root and has no network).
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compilerShare, treeCpu, threadCpuOf, threadCpuDelta, tlsStat } from './lib/proc.js';
import { cellOf, kernelTargets, table, targets, WORKLOADS, type BenchJson, type Cell, type Sample, type Workload } from './lib/report.js';
import {
  HOST_DEFAULT, KERNEL_DEFAULT, SYSTEM_IDS, openDirForNginx, schemeOf, sidecarConnections, startSystem, stopSystem, verify,
  type Context, type System, type SystemId,
} from './lib/systems.js';
import { NGINX_STREAM_MODULE, cpuPlan, ensureTools, makeCert, startOrigin, stopChild, versionOf } from './lib/tools.js';
import { errorCount, errorText, runWrk, writeWrkScript } from './lib/wrk.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const kernel = args.has('--kernel');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const duration = Number(process.env.BENCH_DURATION ?? 5);
/**
 * Seconds per sample of one workload. In the lab (emulated CPU) a 16 MiB response takes seconds, and a sample
 * must hold many of them on each of the 8 connections, or a round ends with none complete: 1 MiB gets 2x and
 * 16 MiB 6x BENCH_DURATION there. On the host every workload gets BENCH_DURATION.
 */
function durationOf(w: Workload): number {
  if (!kernel) return duration;
  return duration * (w.id === '16m' ? 6 : w.id === '1m' ? 2 : 1);
}
const warmup = Number(process.env.BENCH_WARMUP ?? 2);
const warmupRounds = Number(process.env.BENCH_WARMUP_ROUNDS ?? (kernel ? 2 : 0));
const settle = Number(process.env.BENCH_SETTLE ?? (kernel ? 20 : 0));
const fresh = process.env.BENCH_FRESH === '1';
const quietShare = Number(process.env.BENCH_QUIET ?? 0.08);
const warmMax = Number(process.env.BENCH_WARM_MAX ?? 300);
const CONNECTIONS = 8;
/**
 * wrk connections for one system: CONNECTIONS per sidecar worker. `workers: 2` is compared per worker with one
 * worker at the same load per worker (each event loop sees 8 connections, as the one-worker row's does): the
 * scaling a pod with a core per worker gets. Both workers still share the proxy's one core here (the other runs
 * wrk), so the row includes their preemption; it never includes less work per request than one worker does.
 */
function connectionsOf(id: SystemId): number {
  return id === 'sidecar-w2' ? 2 * CONNECTIONS : CONNECTIONS;
}
const wrkTimeout = kernel ? 120 : 10; // the lab's CPU is emulated: a 16 MiB response takes seconds there

function list<T extends string>(knob: string, all: readonly T[], dflt: readonly T[]): T[] {
  const v = process.env[knob];
  if (!v) return [...dflt];
  return v.split(',').filter(Boolean).map((x) => {
    if (!(all as readonly string[]).includes(x)) throw new Error(`${knob}: unknown ${x} (${all.join(', ')})`);
    return x as T;
  });
}
const workloads: Workload[] = list('BENCH_WORKLOADS', WORKLOADS.map((w) => w.id), WORKLOADS.map((w) => w.id)).map((id) => WORKLOADS.find((w) => w.id === id)!);
const systemIds = list<SystemId>('BENCH_SYSTEMS', SYSTEM_IDS, kernel ? KERNEL_DEFAULT : HOST_DEFAULT);
const sidecarCli = path.resolve(process.env.BENCH_SIDECAR_CLI ?? path.join(root, 'dist/proxy/cli.js'));
const sidecarNodeArgs = (process.env.KTLS_BENCH_SIDECAR_ARGS ?? '').split(/\s+/).filter(Boolean);
const cpuDetail = process.env.BENCH_CPU_DETAIL === '1';
/** Systems in JavaScript (V8 optimises them under load): the ones warm-up rounds and settling are for. */
const jits = (id: SystemId): boolean => id === 'node' || id.startsWith('sidecar');

/** One wrk run against one system: CPU of the proxy's process tree around it, and what its record layer was. */
async function measure(sys: System, w: Workload, round: number, ctx: Context, script: string): Promise<Sample> {
  const pid = sys.child!.proc.pid!;
  const isSidecar = sys.id.startsWith('sidecar');
  const conns0 = isSidecar ? await sidecarConnections(sys.adminPort) : null;
  const tls0 = tlsStat();
  const threads0 = cpuDetail ? threadCpuOf(pid) : null;
  const cpu0 = treeCpu(pid);
  const t0 = process.hrtime.bigint();
  sys.child!.mark(`bench-window begin system=${sys.id} workload=${w.id} round=${round}`);
  const r = await runWrk({ url: `${schemeOf(sys.id)}://127.0.0.1:${sys.port}${w.path}`, seconds: durationOf(w), connections: connectionsOf(sys.id), timeoutS: wrkTimeout, core: ctx.plan.client, script, closeEach: w.newConnections });
  const t1 = process.hrtime.bigint();
  sys.child!.mark(`bench-window end system=${sys.id} workload=${w.id} round=${round} requests=${r.requests}`);
  const cpu1 = treeCpu(pid);
  const user = cpu1.user - cpu0.user;
  const sysCpu = cpu1.sys - cpu0.sys;
  if (threads0) console.log(`bench-cpu system=${sys.id} workload=${w.id} round=${round} user=${user.toFixed(2)} sys=${sysCpu.toFixed(2)} threads=${threadCpuDelta(threads0, threadCpuOf(pid))}`);
  if (isSidecar && sidecarNodeArgs.length) {
    // The load phase on the monotonic clock V8's profiler uses, once per process of the sidecar.
    for (const p of cpu1.pids) console.log(`bench-window pid=${p} system=${sys.id} workload=${w.id} round=${round} start_us=${t0 / 1000n} end_us=${t1 / 1000n}`);
  }
  const layer: string[] = [];
  if (conns0) {
    const conns1 = await sidecarConnections(sys.adminPort);
    for (const [k, v] of conns1) {
      const d = v - (conns0.get(k) ?? 0);
      if (d <= 0) continue;
      const [ktls, reason, direction] = k.split('/');
      layer.push(ktls === 'on' ? `kTLS ${direction} (sidecar metrics)` : `userspace (sidecar metrics: ktls off, ${reason})`);
    }
  }
  const tls1 = tlsStat();
  if (tls1.size) {
    const d = (k: string): number => (tls1.get(k) ?? 0) - (tls0.get(k) ?? 0);
    const tx = d('TlsTxSw') + d('TlsTxDevice');
    const rx = d('TlsRxSw') + d('TlsRxDevice');
    // The sidecar's own metrics already say which record layer it used; tls_stat confirms it (and is the only
    // witness for nginx).
    layer.push(tx || rx ? `kTLS (tls_stat: +${tx} tx, +${rx} rx sessions)` : 'userspace (tls_stat: no kTLS sessions)');
  } else if (!isSidecar) layer.push(sys.id === 'nginx-ktls' ? 'userspace (no /proc/net/tls_stat: no kernel TLS)' : 'userspace');
  const errors = errorText(r);
  const seconds = Number(t1 - t0) / 1e9;
  const cpu = user + sysCpu;
  return {
    workload: w.id, system: sys.id, round, requests: r.requests, bytes: r.bytes, seconds, cpuUser: user, cpuSys: sysCpu,
    rps: r.requests / r.durationS, cpuUsPerReq: (cpu / Math.max(1, r.requests)) * 1e6, cpuSPerGiB: cpu / (r.bytes / 2 ** 30),
    p50Us: r.p50Us, p99Us: r.p99Us, maxUs: r.maxUs, errors, valid: errorCount(r) === 0 && r.requests > 0,
    recordLayer: layer.join(', ') || '?', processes: cpu1.pids.length,
  };
}

async function main(): Promise<void> {
  const missing = ensureTools(!kernel, kernel ? ['nginx', 'nginx-stream'] : ['nginx-stream']);
  if (args.has('--tools')) return;
  const systemsWanted = systemIds.filter((id) => {
    if ((id.startsWith('nginx') || id === 'l4') && missing.has('nginx')) {
      console.log(`bench: ${id} skipped: nginx is not installed here${kernel ? ' (the guest sees the host root: install it on the host)' : ''}`);
      return false;
    }
    if (id === 'l4' && !existsSync(NGINX_STREAM_MODULE)) {
      console.log(`bench: l4 skipped: no ${NGINX_STREAM_MODULE} (apt: libnginx-mod-stream; \`npm run bench -- --tools\` installs it)`);
      return false;
    }
    return true;
  });
  const plan = cpuPlan();
  const work = mkdtempSync(path.join(tmpdir(), 'ktls-bench-'));
  const outDir = process.env.BENCH_OUT ?? (kernel && process.env.KTLS_LAB_OUT ? path.join(process.env.KTLS_LAB_OUT, 'bench') : mkdtempSync(path.join(tmpdir(), 'ktls-bench-out-')));
  mkdirSync(outDir, { recursive: true });
  const jsonFile = path.join(outDir, 'bench.json');
  openDirForNginx(work);
  const tls = makeCert(work);
  const origin = await startOrigin(root, work, plan);
  const childLogDir = process.env.BENCH_CHILD_LOGS === '1' ? path.join(outDir, 'children') : null;
  if (childLogDir) mkdirSync(childLogDir, { recursive: true });
  const ctx: Context = { root, dir: work, plan, originPort: origin.port, tls, sidecarCli, sidecarNodeArgs, kernel, childLogDir };
  const script = writeWrkScript(work);
  const kver = versionOf(['uname', '-r']);
  const header = `ktls-sidecar bench (${kernel ? 'lab, emulated CPU: ratios are indicative' : 'host'}): kernel ${kver}, ${plan.note}; ` +
    `${rounds} rounds x ${duration} s${kernel ? ' (1 MiB: x2, 16 MiB: x6)' : ''} (warm-up ${warmup} s${fresh ? `; JS systems: a new process per round, loaded until V8's compilers used <= ${quietShare} of its CPU (at most ${warmMax} s)` : `${warmupRounds > 0 ? ` + ${warmupRounds} unmeasured rounds` : ''}${settle > 0 ? `, ${settle} s of load before each sample` : ''}`}), ${versionOf(['wrk', '-v']).replace(/ Copyright.*/, '')} -t1 -c${CONNECTIONS}${systemIds.includes('sidecar-w2') ? ` (-c${2 * CONNECTIONS} for sidecar-w2: ${CONNECTIONS} per worker)` : ''}, node ${process.version}, sidecar ${path.relative(root, sidecarCli) || sidecarCli}` +
    `${sidecarNodeArgs.length ? ` (node ${sidecarNodeArgs.join(' ')})` : ''}`;
  console.log(header);
  // The results block of docs/benchmark.md, written next to bench.json: the header, one table per workload, targets.
  const md: string[] = [`${header}, ${new Date().toISOString().slice(0, 10)}`];
  const systems: System[] = [];
  const notAvailable = new Map<string, string>();
  const samples: Sample[] = [];
  const cells: Cell[] = [];
  const json = (): BenchJson => ({
    meta: {
      date: new Date().toISOString(), mode: kernel ? 'lab' : 'host', kernel: kver, cpuPlan: plan.note, rounds, durationS: duration, warmupS: warmup, warmupRounds, settleS: settle,
      freshProcess: fresh ? { quietShare, warmMaxS: warmMax } : null,
      connections: CONNECTIONS, wrk: versionOf(['wrk', '-v']), node: process.version, sidecarCli,
      systems: Object.fromEntries(systems.map((s) => [s.id, { description: s.description, available: s.available, reason: s.reason, tls: s.tls }])),
    },
    workloads, samples, cells,
  });
  try {
    for (const id of systemsWanted) {
      const sys = await startSystem(id, ctx);
      systems.push(sys);
      if (!sys.available) {
        if (!id.startsWith('sidecar')) throw new Error(`${id} did not start: ${sys.reason}`);
        notAvailable.set(id, sys.reason);
        console.log(`bench: ${id} not available: ${sys.reason}`);
        continue;
      }
      await verify(sys, workloads.map((w) => ({ path: w.path, bytes: w.bodyBytes })));
      console.log(`bench: ${id} ok (${sys.tls}): ${sys.description}`);
    }
    const live = systems.filter((s) => s.available);
    /** Load that is not measured (warm-up, settle); wrk errors are reported, not counted. */
    const unmeasured = async (sys: System, w: Workload, seconds: number, what: string): Promise<void> => {
      const r = await runWrk({ url: `${schemeOf(sys.id)}://127.0.0.1:${sys.port}${w.path}`, seconds, connections: connectionsOf(sys.id), timeoutS: wrkTimeout, core: plan.client, script, closeEach: w.newConnections });
      if (errorCount(r)) console.log(`bench: ${what} ${sys.id} ${w.id}: wrk errors ${errorText(r)}`);
    };
    /**
     * BENCH_FRESH: a new process for this system (same checks as at the start), loaded in blocks until V8's
     * compiler threads are quiet. The System object is updated in place (new pid, ports).
     */
    const freshAndWarm = async (sys: System, w: Workload, label: string): Promise<void> => {
      await stopSystem(sys, 5_000);
      Object.assign(sys, await startSystem(sys.id, ctx));
      if (!sys.available) throw new Error(`${sys.id} did not start again for ${label}: ${sys.reason}`);
      await verify(sys, workloads.map((x) => ({ path: x.path, bytes: x.bodyBytes })));
      const block = settle > 0 ? settle : 20;
      const shares: string[] = [];
      for (let spent = 0; spent < warmMax; spent += block) {
        const before = threadCpuOf(sys.child!.proc.pid!);
        await unmeasured(sys, w, block, `warming for ${label}`);
        const share = compilerShare(before, threadCpuOf(sys.child!.proc.pid!));
        shares.push(share.toFixed(2));
        if (share <= quietShare) break;
      }
      console.log(`bench-warm system=${sys.id} workload=${w.id} ${label} pid=${sys.child!.proc.pid} blocks=${shares.length}x${block}s compiler_share=${shares.join(',')}`);
    };
    for (const w of workloads) {
      for (const sys of live) {
        if (warmup <= 0) break;
        await unmeasured(sys, w, warmup, 'warm-up');
      }
      for (let round = fresh ? 0 : -warmupRounds; round < rounds; round++) {
        // Rotate the order each round so that no system always runs right after the same neighbour.
        const turn = ((round % live.length) + live.length) % live.length;
        const order = [...live.slice(turn), ...live.slice(0, turn)];
        for (const sys of order) {
          const label = round < 0 ? `warm-up round ${round + warmupRounds + 1}` : `round ${round + 1}`;
          if (fresh && jits(sys.id)) await freshAndWarm(sys, w, label);
          else if (settle > 0 && jits(sys.id)) await unmeasured(sys, w, settle, `settle before ${label}`);
          if (round < 0) {
            if (!jits(sys.id)) continue;
            await unmeasured(sys, w, durationOf(w), label);
            continue;
          }
          const s = await measure(sys, w, round, ctx, script);
          samples.push(s);
          if (!s.valid) console.log(`bench: ${sys.id} ${w.id} round ${round + 1}: invalid (wrk errors ${s.errors || 'none'}, ${s.requests} requests)`);
        }
      }
      cells.push(...live.map((s) => cellOf(samples, w.id, s.id)));
      const block = `**${w.name}**: ${rounds} rounds x ${durationOf(w)} s, wrk -c${CONNECTIONS}${live.some((s) => s.id === 'sidecar-w2') ? ` (sidecar-w2: -c${2 * CONNECTIONS})` : ''}; medians [min..max]; ratios of medians\n\n${table(w, cells.filter((c) => c.workload === w.id), notAvailable)}`;
      console.log(`\n${block}`);
      md.push(block);
      writeFileSync(jsonFile, JSON.stringify(json(), null, 1)); // after every workload: a partial run still leaves its data
    }
  } finally {
    const grace = sidecarNodeArgs.length ? 30_000 : 5_000;
    await Promise.all(systems.map((s) => stopSystem(s, grace)));
    await stopChild(origin.child, 2000);
    rmSync(work, { recursive: true, force: true });
  }
  writeFileSync(jsonFile, JSON.stringify(json(), null, 1));
  for (const [issue, met] of [['issue 10', targets(cells)], ['issue 11 (kernel data path)', kernelTargets(cells)]] as const) {
    if (!met.length) continue;
    const block = `${issue} targets (medians of this run):\n\n\`\`\`\n${met.join('\n')}\n\`\`\``;
    console.log(`\n${block}`);
    md.push(block);
  }
  writeFileSync(path.join(outDir, 'bench.md'), `${md.join('\n\n')}\n`);
  console.log(`\nbench: every sample in ${jsonFile}, the tables in ${path.join(outDir, 'bench.md')}\nchart: node --import tsx bench/chart.ts ${jsonFile} docs/bench/${kernel ? 'lab' : 'host'}.svg`);
}

await main();
