// Benchmark: the sidecar's CPU cost per GiB delivered and its request rate, with kTLS off, tx and txrx,
// measured side by side in one run and reported as ratios to "off" (median and spread over rounds).
//
//   npm run bench            on this host (kernel without TLS: tx/txrx are labelled off and reported as such)
//   npm run bench:kernel     inside the QEMU lab on a kernel with the tls module
//
// Method. One upstream (plain HTTP on loopback) serves fixed-size bodies. For each mode a fresh sidecar
// process is started with a config file that selects the mode; a keep-alive HTTPS client (undici) drives a fixed
// number of requests at fixed concurrency. The sidecar's CPU time is read from /proc/<pid>/stat (utime+stime)
// right before and after the load, so the client's and upstream's CPU are not counted. Modes are interleaved
// round by round (off, tx, txrx, off, tx, …) so that drift of a noisy machine hits every mode alike.
// A mode whose connections did not actually run on kTLS (per the sidecar's own /metrics) is reported with the
// reason it gave, never as a kTLS number.
//
// Knobs (environment):
//   BENCH_ROUNDS=3           rounds per workload (each round runs every mode once)
//   BENCH_SCALE=<n>          request-count scale (default 1 on the host, 0.25 in the lab)
//   BENCH_WORKLOADS=64k,...  only these workloads, by id: 16m (16 MiB responses), 64k (64 KiB responses),
//                            1k (1 KiB requests); default all
//   BENCH_MODES=off,tx,...   only these modes (default off,tx,txrx); ratios need `off` among them
//   BENCH_SIDECAR_CLI=<file> the sidecar entry point to run (default dist/proxy/cli.js), e.g. a copy of a
//                            baseline build, to compare two builds with the same bench
//   BENCH_CPU_DETAIL=1       also print, per run, the sidecar's user/system split and CPU by thread name
//                            (a `bench-cpu` line), from /proc/<pid>/task/*/stat
//   KTLS_BENCH_SIDECAR_ARGS  extra node flags for the sidecar child, split on whitespace, e.g.
//                            "--cpu-prof --cpu-prof-dir=$KTLS_LAB_OUT/prof". When set, the sidecar is stopped
//                            with SIGTERM (not SIGKILL) after each run so that such flags can write their output
//                            at exit (SIGKILL after 30 s if it has not exited).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';

type Mode = 'off' | 'tx' | 'txrx';
interface Workload { id: string; name: string; path: string; bodyBytes: number; uploadBytes: number; requests: number; concurrency: number }
interface Sample { cpuSeconds: number; wallSeconds: number; bytes: number; requests: number; ktlsOnConnections: number; reasons: string }

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const kernel = args.has('--kernel');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const scale = Number(process.env.BENCH_SCALE ?? (kernel ? 0.25 : 1)); // the lab emulates the CPU: fewer requests
const ALL_MODES: Mode[] = ['off', 'tx', 'txrx'];
const MODES: Mode[] = process.env.BENCH_MODES
  ? process.env.BENCH_MODES.split(',').map((m) => {
    if (!(ALL_MODES as string[]).includes(m)) throw new Error(`BENCH_MODES: unknown mode ${m} (${ALL_MODES.join(', ')})`);
    return m as Mode;
  })
  : ALL_MODES;
const sidecarCli = path.resolve(process.env.BENCH_SIDECAR_CLI ?? path.join(root, 'dist/proxy/cli.js'));
const cpuDetailWanted = process.env.BENCH_CPU_DETAIL === '1';
const sidecarNodeArgs = (process.env.KTLS_BENCH_SIDECAR_ARGS ?? '').split(/\s+/).filter(Boolean);
const KiB = 1024;
const MiB = 1024 * KiB;
const allWorkloads: Workload[] = [
  { id: '16m', name: '16 MiB responses', path: `/bytes/${16 * MiB}`, bodyBytes: 16 * MiB, uploadBytes: 0, requests: Math.max(8, Math.round(48 * scale)), concurrency: 4 },
  { id: '64k', name: '64 KiB responses', path: `/bytes/${64 * KiB}`, bodyBytes: 64 * KiB, uploadBytes: 0, requests: Math.max(200, Math.round(3000 * scale)), concurrency: 16 },
  { id: '1k', name: '1 KiB requests', path: '/echo', bodyBytes: KiB, uploadBytes: KiB, requests: Math.max(500, Math.round(8000 * scale)), concurrency: 32 },
];
const workloadIds = process.env.BENCH_WORKLOADS?.split(',').filter(Boolean);
for (const id of workloadIds ?? []) {
  if (!allWorkloads.some((w) => w.id === id)) throw new Error(`BENCH_WORKLOADS: unknown workload ${id} (${allWorkloads.map((w) => w.id).join(', ')})`);
}
const workloads = workloadIds ? allWorkloads.filter((w) => workloadIds.includes(w.id)) : allWorkloads;

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

function cpuSecondsOf(pid: number): number {
  // /proc/<pid>/stat: the command name may contain spaces, so split after the last ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

function startUpstream(): Promise<http.Server> {
  const chunk = Buffer.alloc(64 * KiB, 0x61);
  const server = http.createServer((req, res) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (m) {
      let left = Number(m[1]);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return; }
        }
        res.end();
      };
      pump();
      return;
    }
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function makeCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

/** CPU seconds by thread name (user, system), from /proc/<pid>/task/<tid>/stat. */
function threadCpuOf(pid: number): Map<string, { user: number; sys: number }> {
  const out = new Map<string, { user: number; sys: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch { return out; }
  for (const tid of tids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch { continue; } // the thread exited
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '#').replace(/\s+/g, '_');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const e = out.get(name) ?? { user: 0, sys: 0 };
    e.user += Number(fields[11]) / CLK_TCK;
    e.sys += Number(fields[12]) / CLK_TCK;
    out.set(name, e);
  }
  return out;
}

function cpuDetail(before: Map<string, { user: number; sys: number }>, after: Map<string, { user: number; sys: number }>): string {
  let user = 0;
  let sys = 0;
  const parts: string[] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { user: 0, sys: 0 };
    const du = a.user - b.user;
    const ds = a.sys - b.sys;
    user += du;
    sys += ds;
    if (du + ds > 0) parts.push(`${name}:${du.toFixed(2)}u+${ds.toFixed(2)}s`);
  }
  return `user=${user.toFixed(2)} sys=${sys.toFixed(2)} threads=${parts.join(',')}`;
}

async function waitReady(adminPort: number, child: ChildProcess): Promise<void> {
  // In the lab the first start probes the kernel while it loads the crypto modules under emulation (10-20 s).
  const waitMs = kernel ? 180_000 : 30_000;
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`sidecar exited with code ${child.exitCode}`);
    try {
      const res = await request(`http://127.0.0.1:${adminPort}/readyz`);
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sidecar did not become ready within ${waitMs / 1000} s`);
}

async function ktlsFacts(adminPort: number): Promise<{ on: number; reasons: string }> {
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`);
  const text = await res.body.text();
  let on = 0;
  const reasons = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('ktls_sidecar_connections_opened_total{')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const ktls = /ktls="(on|off)"/.exec(line)?.[1];
    const reason = /ktls_reason="([^"]*)"/.exec(line)?.[1] ?? '?';
    if (ktls === 'on') on += value;
    reasons.set(`${ktls}/${reason}`, (reasons.get(`${ktls}/${reason}`) ?? 0) + value);
  }
  return { on, reasons: [...reasons].map(([k, v]) => `${k}=${v}`).join(',') };
}

async function runOne(mode: Mode, w: Workload, upstreamPort: number, tls: { cert: string; key: string }, dir: string): Promise<Sample> {
  const port = await freePort();
  const adminPort = await freePort();
  const configFile = path.join(dir, `config-${mode}.yaml`);
  writeFileSync(configFile, [
    'listen:', '  host: 127.0.0.1', `  port: ${port}`,
    'admin:', '  host: 127.0.0.1', `  port: ${adminPort}`,
    'upstream:', `  url: http://127.0.0.1:${upstreamPort}`,
    'tls:', `  cert: ${tls.cert}`, `  key: ${tls.key}`,
    'log:', '  level: warn',
    'ktls:', `  enabled: ${mode !== 'off'}`, `  direction: ${mode === 'off' ? 'tx' : mode}`, '  sampleRate: 1',
    '',
  ].join('\n'));
  const child = spawn(process.execPath, [...sidecarNodeArgs, sidecarCli, '--config', configFile], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitReady(adminPort, child);
    const agent = new Agent({ connections: w.concurrency, pipelining: 1, connect: { rejectUnauthorized: false } });
    const origin = `https://127.0.0.1:${port}`;
    const upload = Buffer.alloc(w.uploadBytes, 0x62);
    // Warm-up: open the connections (handshakes are not what this measures) and let the JIT settle.
    await Promise.all(Array.from({ length: w.concurrency }, async () => {
      const r = await request(origin + w.path, { dispatcher: agent, method: w.uploadBytes ? 'POST' : 'GET', body: w.uploadBytes ? upload : undefined });
      await r.body.dump();
    }));
    let next = 0;
    let bytes = 0;
    const threads0 = cpuDetailWanted ? threadCpuOf(child.pid!) : null;
    const cpu0 = cpuSecondsOf(child.pid!);
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: w.concurrency }, async () => {
      while (next < w.requests) {
        next++;
        const r = await request(origin + w.path, { dispatcher: agent, method: w.uploadBytes ? 'POST' : 'GET', body: w.uploadBytes ? upload : undefined });
        if (r.statusCode !== 200) throw new Error(`${mode} ${w.name}: status ${r.statusCode}`);
        for await (const chunk of r.body) bytes += (chunk as Buffer).length;
      }
    }));
    const t1 = process.hrtime.bigint();
    const wallSeconds = Number(t1 - t0) / 1e9;
    if (sidecarNodeArgs.length) {
      // The load phase on the monotonic clock V8's profiler uses (bench/cpuprofile-top.ts --log picks it up).
      console.log(`bench-window pid=${child.pid} mode=${mode} workload=${w.id} start_us=${t0 / 1000n} end_us=${t1 / 1000n}`);
    }
    const cpuSeconds = cpuSecondsOf(child.pid!) - cpu0;
    if (threads0) {
      console.log(`bench-cpu pid=${child.pid} mode=${mode} workload=${w.id} cpu=${cpuSeconds.toFixed(2)} ${cpuDetail(threads0, threadCpuOf(child.pid!))}`);
    }
    const expected = w.requests * w.bodyBytes;
    if (bytes !== expected) throw new Error(`${mode} ${w.name}: got ${bytes} bytes, expected ${expected}`);
    await agent.close();
    const facts = await ktlsFacts(adminPort);
    return { cpuSeconds, wallSeconds, bytes, requests: w.requests, ktlsOnConnections: facts.on, reasons: facts.reasons };
  } finally {
    const exited = new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    if (sidecarNodeArgs.length) {
      // Let flags such as --cpu-prof write their output at a clean exit.
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    } else {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const fmt = (x: number, d = 3): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ktls-bench-'));
  const upstream = await startUpstream();
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const tls = makeCert(dir);
  console.log(`ktls-sidecar bench: ${rounds} rounds, modes ${MODES.join('/')}, sidecar ${path.relative(root, sidecarCli)}${sidecarNodeArgs.length ? ` (node ${sidecarNodeArgs.join(' ')})` : ''}, kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, ${kernel ? 'lab (emulated CPU: ratios are indicative)' : 'host'}`);
  try {
    for (const w of workloads) {
      const samples = new Map<Mode, Sample[]>(MODES.map((m) => [m, []]));
      for (let r = 0; r < rounds; r++) {
        for (const mode of MODES) samples.get(mode)!.push(await runOne(mode, w, upstreamPort, tls, dir));
      }
      const stat = (mode: Mode): { cpuPerGiB: number[]; rps: number[]; on: number; reasons: string } => {
        const s = samples.get(mode)!;
        return {
          cpuPerGiB: s.map((x) => x.cpuSeconds / (x.bytes / 2 ** 30)),
          rps: s.map((x) => x.requests / x.wallSeconds),
          on: Math.min(...s.map((x) => x.ktlsOnConnections)),
          reasons: s[s.length - 1]!.reasons,
        };
      };
      const off = MODES.includes('off') ? stat('off') : null;
      console.log(`\n${w.name} (${w.requests} requests x ${rounds} rounds, concurrency ${w.concurrency})`);
      console.log('mode  | CPU s/GiB median [min..max] | ratio to off | req/s median [min..max] | ratio to off | kTLS connections (sidecar metrics)');
      for (const mode of MODES) {
        const s = stat(mode);
        const cpu = median(s.cpuPerGiB);
        const rps = median(s.rps);
        const usedKtls = mode === 'off' || s.on > 0;
        const ratioCpu = !usedKtls ? `n/a (not kTLS: ${s.reasons})` : off ? fmt(cpu / median(off.cpuPerGiB)) : 'n/a';
        const ratioRps = usedKtls && off ? fmt(rps / median(off.rps)) : 'n/a';
        console.log(`${mode.padEnd(5)} | ${fmt(cpu)} [${fmt(Math.min(...s.cpuPerGiB))}..${fmt(Math.max(...s.cpuPerGiB))}] | ${ratioCpu} | ${fmt(rps, 1)} [${fmt(Math.min(...s.rps), 1)}..${fmt(Math.max(...s.rps), 1)}] | ${ratioRps} | ${s.reasons}`);
      }
    }
  } finally {
    upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
