// Summarise V8 .cpuprofile files (node --cpu-prof): top functions by self and total time, and time by
// origin (our code, node internals, dependencies, GC, idle).
//
//   node --import tsx bench/cpuprofile-top.ts [--top N] [--log BENCH_STDOUT] FILE.cpuprofile...
//
// --log: the bench's stdout when it ran with KTLS_BENCH_SIDECAR_ARGS; its `bench-window pid=… system=…
// workload=… round=… start_us=… end_us=…` lines (one per measured sample and sidecar process) restrict each
// profile (matched by the pid in its file name, CPU.<date>.<time>.<pid>.…) to the measured load phases, so
// start-up (kernel probe), warm-up and the other systems' turns are left out. Several files: each is printed,
// then their sum. Times are in ms of samples.
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }
interface Window { label: string; spans: { start: number; end: number }[] }
interface Summary { self: Map<string, number>; total: Map<string, number>; origin: Map<string, number>; ms: number }

const argv = process.argv.slice(2);
let top = 30;
let logFile: string | null = null;
const files: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--top') top = Number(argv[++i]);
  else if (argv[i] === '--log') logFile = argv[++i]!;
  else files.push(argv[i]!);
}

const windows = new Map<number, Window>();
if (logFile) {
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    // `mode=` is what older runs of the bench printed instead of `system=`.
    const m = /bench-window pid=(\d+) (?:system|mode)=(\S+) workload=(\S+)(?: round=\d+)? start_us=(\d+) end_us=(\d+)/.exec(line);
    if (!m) continue;
    const w = windows.get(Number(m[1])) ?? { label: m[2]!, spans: [] };
    const label = `${m[3]}/${m[2]}`;
    if (!w.label.split(',').includes(label)) w.label = w.spans.length ? `${w.label},${label}` : label;
    w.spans.push({ start: Number(m[4]), end: Number(m[5]) });
    windows.set(Number(m[1]), w);
  }
}

function keyOf(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  const url = f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/');
  return `${name} ${url}:${f.lineNumber + 1}`;
}

function originOf(f: CallFrame): string {
  if (!f.url) return f.functionName.startsWith('(') ? f.functionName : '(native)';
  if (f.url.startsWith('node:')) return 'node internals';
  if (f.url.includes('/node_modules/')) return `dep ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f.url)?.[1]}`;
  if (f.url.includes('/dist/')) return 'sidecar (dist)';
  return 'other';
}

function summarise(p: Profile, win: Window | undefined): Summary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const s: Summary = { self: new Map(), total: new Map(), origin: new Map(), ms: 0 };
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (win && !win.spans.some((sp) => t >= sp.start && t <= sp.end)) continue;
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000; // this sample lasts until the next one
    const node = byId.get(p.samples[i]!)!;
    s.ms += dt;
    const k = keyOf(node.callFrame);
    s.self.set(k, (s.self.get(k) ?? 0) + dt);
    const o = originOf(node.callFrame);
    s.origin.set(o, (s.origin.get(o) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const key = keyOf(byId.get(id)!.callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      s.total.set(key, (s.total.get(key) ?? 0) + dt);
    }
  }
  return s;
}

function add(into: Map<string, number>, from: Map<string, number>): void {
  for (const [k, v] of from) into.set(k, (into.get(k) ?? 0) + v);
}

function print(title: string, s: Summary): void {
  const pct = (v: number): string => `${((100 * v) / s.ms).toFixed(1).padStart(5)}%`;
  const rows = (m: Map<string, number>, n: number): string[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `  ${v.toFixed(0).padStart(7)} ms ${pct(v)}  ${k}`);
  console.log(`\n== ${title}: ${s.ms.toFixed(0)} ms sampled`);
  console.log('-- by origin (self)');
  console.log(rows(s.origin, 20).join('\n'));
  console.log(`-- top ${top} self`);
  console.log(rows(s.self, top).join('\n'));
  console.log(`-- top ${top} total (inclusive)`);
  console.log(rows(new Map([...s.total].filter(([k]) => !k.startsWith('('))), top).join('\n'));
}

const sum: Summary = { self: new Map(), total: new Map(), origin: new Map(), ms: 0 };
for (const f of files) {
  const pid = Number(/^CPU\.\d+\.\d+\.(\d+)\./.exec(path.basename(f))?.[1]);
  const win = windows.get(pid);
  if (logFile && !win) {
    console.log(`\n== ${f}: no bench-window for pid ${pid}, skipped`);
    continue;
  }
  const s = summarise(JSON.parse(readFileSync(f, 'utf8')) as Profile, win);
  print(`${path.basename(f)}${win ? ` [${win.label}: ${win.spans.length} load phases]` : ''}`, s);
  add(sum.self, s.self);
  add(sum.total, s.total);
  add(sum.origin, s.origin);
  sum.ms += s.ms;
}
if (files.length > 1) print('all files', sum);
