// test/lab/guest-run.mjs FILE...: runs compiled tap test files inside the lab VM.
//
// Why not the tap CLI: under TCG emulation its runner plus the ts-node loader it
// imports into every test process cost 15-30 s per file (measured, see
// docs/kernel-lab.md). A tap test file is itself a TAP producer, so each compiled
// file runs as `node FILE` (with the tap library bundled into one module by
// build-tests.mjs), KTLS_LAB_JOBS at a time, and this script prints the same stream
// the tap CLI would: one indented subtest per file, then `# { total, pass, fail, ... }`.
//
// Options (env): KTLS_LAB_JOBS, KTLS_LAB_FILE_TIMEOUT, KTLS_LAB_SOURCE_MAPS (see below).
// Each FILE is "<compiled path>=<source path>" (the source path names the subtest).
// A file that times out (KTLS_LAB_FILE_TIMEOUT seconds, default 300), dies, or exits
// non-zero without reporting a failure counts as one extra failure.
// Exit code: 0 when every file passed, 1 otherwise.
import { spawn } from 'node:child_process';
import { availableParallelism, release } from 'node:os';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';

const jobs = Math.max(1, Number(process.env.KTLS_LAB_JOBS) || availableParallelism());
const fileTimeoutMs = (Number(process.env.KTLS_LAB_FILE_TIMEOUT) || 300) * 1000;
// tap's own per-file timeout (30 s unless TAP_TIMEOUT says otherwise) is far too short
// under TCG; it fires a little before ours, so that tap reports what was still pending.
const tapTimeout = process.env.TAP_TIMEOUT ?? String(Math.max(1, Math.floor((fileTimeoutMs / 1000) * 0.95 - 5)));
// Failures then point at the TypeScript sources (KTLS_LAB_SOURCE_MAPS=0 turns it off).
const nodeArgs = process.env.KTLS_LAB_SOURCE_MAPS === '0' ? [] : ['--enable-source-maps'];
const files = process.argv.slice(2).map((arg) => {
  const eq = arg.indexOf('=');
  return eq < 0 ? { path: arg, name: arg } : { path: arg.slice(0, eq), name: arg.slice(eq + 1) };
});

/** `# { total: 6, pass: 5, fail: 1 }` (tap's own summary line) -> { total: 6, pass: 5, fail: 1 }. */
function parseSummary(text) {
  const lines = text.split('\n').filter((l) => /^# \{ .*\}\s*$/.test(l));
  const last = lines.at(-1);
  if (!last) return null;
  const counts = {};
  for (const m of last.matchAll(/(\w+): (\d+)/g)) counts[m[1]] = Number(m[2]);
  return counts;
}

function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [...nodeArgs, file.path], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TAP_TIMEOUT: tapTimeout } });
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }, fileTimeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ file, out, err, code, signal, timedOut, seconds: (Date.now() - started) / 1000 });
    });
  });
}

const totals = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 };
let point = 0;
let failedFiles = 0;

function report(r) {
  point += 1;
  const counts = parseSummary(r.out) ?? {};
  let extraFail = 0;
  const notes = [];
  if (r.timedOut) notes.push(`timed out after ${fileTimeoutMs / 1000} s (KTLS_LAB_FILE_TIMEOUT)`);
  if (r.signal) notes.push(`killed by ${r.signal}`);
  if (!parseSummary(r.out)) notes.push('no tap summary line (the file did not finish)');
  if (r.code !== 0 && r.code !== null && !(counts.fail > 0)) notes.push(`exit code ${r.code}`);
  if (notes.length > 0 && !(counts.fail > 0)) extraFail = 1;
  if (r.timedOut && counts.fail > 0) extraFail = 1;
  for (const k of Object.keys(totals)) totals[k] += counts[k] ?? 0;
  totals.total += extraFail;
  totals.fail += extraFail;
  const ok = r.code === 0 && extraFail === 0 && !(counts.fail > 0);
  if (!ok) failedFiles += 1;
  if (r.err.trim() !== '') {
    process.stderr.write(`# stderr of ${r.file.name}:\n${r.err.replace(/\n?$/, '\n')}`);
  }
  const body = r.out
    .split('\n')
    .filter((l) => l !== 'TAP version 14')
    .map((l) => (l === '' ? '' : `    ${l}`))
    .join('\n')
    .replace(/\n*$/, '\n');
  process.stdout.write(`# Subtest: ${r.file.name}\n${body}`);
  for (const n of notes) process.stdout.write(`    # ${n}\n`);
  process.stdout.write(`${ok ? 'ok' : 'not ok'} ${point} - ${r.file.name} # time=${Math.round(r.seconds * 1000)}ms\n`);
}

process.stdout.write(`TAP version 14\n# kernel ${release()}, ${files.length} files, ${jobs} jobs, file timeout ${fileTimeoutMs / 1000} s\n`);
const started = Date.now();
const queue = [...files];
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let f = queue.shift(); f; f = queue.shift()) report(await runFile(f));
  }),
);
const summary = Object.entries(totals)
  .filter(([k, v]) => v > 0 || k === 'total' || k === 'pass' || k === 'fail')
  .map(([k, v]) => `${k}: ${v}`)
  .join(', ');
process.stdout.write(`1..${point}\n# { ${summary} }\n# time=${Date.now() - started}ms\n`);
process.exitCode = failedFiles > 0 || files.length === 0 ? 1 : 0;
