// Where a sidecar's kernel time goes, per request, by system call: syscalls counted with perf's tracepoints and
// the kernel's CPU sampled with call chains, for each system (kTLS off, tx, txrx) under the same 1 KiB load.
// Runs inside the kernel lab (the host kernel has no kTLS), as root:
//
//   KTLS_LAB_QEMU_ARGS='-icount shift=3,sleep=off' bash test/lab/run-in-vm.sh --out /tmp/kp -- \
//     node --import tsx bench/kernel-profile.ts
//
// Per system: one sidecar process (bench/lib/systems.ts, the bench's configs), PROFILE_WARMUP seconds of wrk load
// (-t1 -c8, keep-alive), then two windows of PROFILE_WINDOW seconds: `perf stat` on the process's syscall
// tracepoints, then `perf record -g` on the proxy's core (cpu-clock, 997 Hz). The report gives syscalls per
// request and the main thread's kernel µs per request by syscall, with the kernel functions that take the most
// inclusive time under each. perf's own sampling adds kernel time (in the timer interrupts' row, with the softirqs
// run at their exit), and one process per system is one sample: read the composition and the differences between
// syscalls, not the totals, and decide a ratio with bench/run.ts. Knobs: PROFILE_SYSTEMS (sidecar,sidecar-tx,sidecar-txrx), PROFILE_PATH (/1k),
// PROFILE_WARMUP (150), PROFILE_WINDOW (30), BENCH_SIDECAR_CLI. Output: $KTLS_LAB_OUT/kernel-profile (or
// BENCH_OUT): kernel-profile.md, and per system the perf stat file and perf.data with the guest's kallsyms.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseStat, profileOf, top } from './lib/perf.js';
import { SYSTEM_IDS, startSystem, stopSystem, type Context, type SystemId } from './lib/systems.js';
import { cpuPlan, makeCert, startOrigin, stopChild } from './lib/tools.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const systems = (process.env.PROFILE_SYSTEMS ?? 'sidecar,sidecar-tx,sidecar-txrx').split(',').filter(Boolean).map((s) => {
  if (!s.startsWith('sidecar') || !(SYSTEM_IDS as readonly string[]).includes(s)) throw new Error(`PROFILE_SYSTEMS: ${s} is not a sidecar system`);
  return s as SystemId;
});
const urlPath = process.env.PROFILE_PATH ?? '/1k';
const warmup = Number(process.env.PROFILE_WARMUP ?? 150);
const windowS = Number(process.env.PROFILE_WINDOW ?? 30);
const out = process.env.BENCH_OUT ?? path.join(process.env.KTLS_LAB_OUT ?? mkdtempSync(path.join(tmpdir(), 'kernel-profile-')), 'kernel-profile');
/** The syscalls a proxied request can make; perf stat opens one tracepoint each (all of them stall the guest). */
const SYSCALLS = ['read', 'write', 'writev', 'readv', 'recvfrom', 'sendto', 'recvmsg', 'sendmsg', 'epoll_pwait', 'epoll_wait',
  'epoll_ctl', 'futex', 'getsockopt', 'setsockopt', 'splice', 'mprotect', 'madvise', 'mmap', 'munmap', 'accept4', 'close'];
/** µs per sample of `perf record -F 997`. */
const SAMPLE_US = 1e6 / 997;

if (process.getuid?.() !== 0 || !process.env.KTLS_LAB) throw new Error('run inside the kernel lab (test/lab/run-in-vm.sh): perf needs root and a kTLS kernel');
mkdirSync(out, { recursive: true });
for (const [fs, dir] of [['tracefs', '/sys/kernel/tracing'], ['debugfs', '/sys/kernel/debug']] as const) {
  if (!existsSync(path.join(dir, 'events'))) execFileSync('mount', ['-t', fs, 'nodev', dir]);
}
writeFileSync('/proc/sys/kernel/kptr_restrict', '0');
writeFileSync('/proc/sys/kernel/perf_event_paranoid', '-1');
copyFileSync('/proc/kallsyms', path.join(out, 'kallsyms'));

/**
 * perf with a `sleep` as its workload, so that it stops when we kill the sleep: perf stat -p waits for its workload,
 * and perf record is slow to set up under emulation (the load must not start before it samples).
 */
async function perfAround(args: string[], work: string, load: () => Promise<number>): Promise<number> {
  const marker = path.join(work, `perf-${Date.now()}`);
  const perf = spawn('perf', [...args, '--', 'sh', '-c', `echo $$ > ${marker}.tmp && mv ${marker}.tmp ${marker} && exec sleep 100000`], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((r) => perf.on('exit', () => r()));
  while (!existsSync(marker)) await new Promise((r) => setTimeout(r, 200));
  const requests = await load();
  process.kill(Number(readFileSync(marker, 'utf8')), 'SIGTERM');
  await exited;
  return requests;
}


const plan = cpuPlan();
const work = mkdtempSync(path.join(tmpdir(), 'kernel-profile-'));
const tls = makeCert(work);
const origin = await startOrigin(root, work, plan);
const ctx: Context = {
  root, dir: work, plan, originPort: origin.port, tls, kernel: true, childLogDir: null, sidecarNodeArgs: [],
  sidecarCli: path.resolve(process.env.BENCH_SIDECAR_CLI ?? path.join(root, 'dist/proxy/cli.js')),
};
const script = writeWrkScript(work);
const report: string[] = [`# Kernel time per request (${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, GET ${urlPath}, wrk -t1 -c8, ` +
  `${warmup} s warm-up, ${windowS}-s windows, ${path.relative(root, ctx.sidecarCli)})`, ''];
for (const id of systems) {
  const sys = await startSystem(id, ctx);
  if (!sys.available) {
    report.push(`## ${id}: not available (${sys.reason})`, '');
    continue;
  }
  const pid = String(sys.child!.proc.pid);
  const load = async (seconds: number): Promise<number> =>
    (await runWrk({ url: `https://127.0.0.1:${sys.port}${urlPath}`, seconds, connections: 8, timeoutS: 120, core: plan.client, script })).requests;
  await load(warmup);
  const statFile = path.join(out, `${id}.stat`);
  const events = ['raw_syscalls:sys_enter', ...SYSCALLS.map((s) => `syscalls:sys_enter_${s}`)].flatMap((e) => ['-e', e]);
  const statRequests = await perfAround(['stat', '-x', ',', '-o', statFile, ...events, '-p', pid], work, () => load(windowS));
  const dataTmp = path.join(work, `${id}.perf.data`); // perf mmaps its output: not on the 9p share
  const recRequests = await perfAround(['record', '-q', '-e', 'cpu-clock', '-F', '997', '-g', '-o', dataTmp, '-C', plan.proxy ?? '0'], work, () => load(windowS));
  await stopSystem(sys, 5000);
  copyFileSync(dataTmp, path.join(out, `${id}.perf.data`));
  const stat = parseStat(readFileSync(statFile, 'utf8'));
  const prof = profileOf(execFileSync('perf', ['script', '-i', dataTmp, '-F', 'comm,tid,ip,sym,dso'], { encoding: 'utf8', maxBuffer: 1 << 30 }));
  const perReq = (n: number): string => (n / statRequests).toFixed(2);
  const us = (samples: number): string => ((samples * SAMPLE_US) / recRequests).toFixed(1);
  report.push(`## ${id}`, '', `Syscalls per request (${statRequests} requests): ${perReq(stat.get('raw_syscalls:sys_enter') ?? 0)} in all; ` +
    top(new Map([...stat].filter(([k]) => !k.includes(':'))), 12).filter(([, v]) => v / statRequests >= 0.01).map(([k, v]) => `${k} ${perReq(v)}`).join(', '), '',
  `CPU µs per request by thread (${recRequests} requests): ` + top(prof.threadUs, 8).map(([k, v]) => `${k} ${us(v)}`).join(', '), '',
  '| main thread, kernel | µs/req | the kernel functions with the most inclusive µs/req under it |', '|---|---|---|');
  for (const [sc, n] of top(prof.bySyscall, 10)) {
    const inc = top(prof.inclusive.get(sc) ?? new Map<string, number>(), 12).filter(([, v]) => v * 20 >= n).map(([k, v]) => `${k} ${us(v)}`).join(', ');
    report.push(`| ${sc} | ${us(n)} | ${inc} |`);
  }
  report.push('');
  console.log(`kernel-profile: ${id} done (${statRequests} + ${recRequests} requests)`);
}
await stopChild(origin.child, 2000);
writeFileSync(path.join(out, 'kernel-profile.md'), report.join('\n'));
console.log(report.join('\n'));
