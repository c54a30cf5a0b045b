// workers: 2 through the real CLI: both workers accept from the one listener,
// /metrics is one exposition for the pod, PUT /ktls reaches every worker, a
// killed worker is replaced, SIGTERM drains every worker, and a bad `workers`
// value is a config error.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type LogLine, type RunningSidecar, runCli, startSidecar } from '../helpers/sidecar.js';
import { adminRequest } from '../helpers/child-sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());

const badZero = runCli(['--workers', '0', '--demo']);
const badWord = runCli(['--demo'], { KTLS_SIDECAR_WORKERS: 'fast' });

// 127.0.0.1 on purpose: a worker's startup kernel probe listens on 127.0.0.1 port 0 too, and in a
// cluster worker a shared (non-exclusive) listen on the same address and port as another worker's gets
// that worker's socket: the probe then accepted TLS clients and hung (fixed: the probe's listen is exclusive).
const args = ['--listen-host', '127.0.0.1', '--workers', '2', '--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url];
// A second pod, on a config file: the watch and SIGHUP go to the primary and reach every worker.
const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-workers-'));
t.teardown(() => fs.rmSync(cfgDir, { recursive: true, force: true }));
const cfgFile = path.join(cfgDir, 'config.json');
const writeConfig = (enabled: boolean, level = 'info'): void =>
  fs.writeFileSync(cfgFile, JSON.stringify({ tls: { cert: pki.server.cert, key: pki.server.key }, upstream: { url: up.url }, ktls: { enabled }, log: { level } }));
writeConfig(true);
const [sc, hup] = await Promise.all([
  startSidecar([...args, '--shutdown-drain-timeout', '10s']),
  startSidecar(['--listen-host', '127.0.0.1', '--workers', '2', '--config', cfgFile]),
]);
t.teardown(() => sc.stop('SIGKILL'));
t.teardown(() => hup.stop('SIGKILL'));

const closedLines = (from = 0): LogLine[] => sc.logs.slice(from).filter((l) => l.event === 'connection_closed' && l['protocol'] === 'http1');
const workersOf = (lines: LogLine[]): Set<unknown> => new Set(lines.map((l) => l['worker']));

async function until(pred: () => boolean | Promise<boolean>, what: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * New connections (one request each) in parallel batches until the close lines
 * after log index `from` come from `workers` distinct workers. The kernel picks
 * the accepting worker, so the number of connections this takes varies; the
 * limit only stops a pod where one worker never accepts.
 */
async function spread(from: number, workers = 2, limit = 400): Promise<number> {
  let sent = 0;
  while (sent < limit) {
    const batch = await Promise.all(Array.from({ length: 8 }, () => request(sc.tlsPort, { ca: pki.caCert, path: '/spread' })));
    for (const r of batch) if (r.status !== 200) throw new Error(`status ${r.status}`);
    sent += batch.length;
    await until(() => closedLines(from).length >= sent, 'the close lines');
    if (workersOf(closedLines(from)).size >= workers) return sent;
  }
  throw new Error(`${limit} connections all went to fewer than ${workers} workers`);
}

function workerPids(s: RunningSidecar): Map<number, number> {
  const pids = new Map<number, number>();
  for (const l of s.logs) if (l.event === 'worker_listening') pids.set(Number(l['worker']), Number(l['pid']));
  return pids;
}

t.test('the startup line says how many workers, and both listen', async (t) => {
  const startup = await sc.waitForLog((l) => l.event === 'startup');
  t.equal(startup['workers'], 2);
  t.equal(workerPids(sc).size, 2, 'two workers said they listen');
  t.equal(sc.logs.filter((l) => l.event === 'startup').length, 1, 'one startup line for the pod');
});

t.test('requests are served by both workers; /metrics sums them in one series', async (t) => {
  const sent = await spread(0);
  const lines = closedLines();
  t.equal(lines.length, sent);
  const m = await sc.metrics();
  const series = m.split('\n').filter((l) => l.startsWith('ktls_sidecar_connections_opened_total{') && l.includes('protocol="http1"'));
  t.equal(series.length, 1, 'one series for the pod, not one per worker');
  t.equal(metricValue(m, 'ktls_sidecar_connections_opened_total', { protocol: 'http1' }), sent, 'the sum of both workers');
  t.equal(metricValue(m, 'ktls_sidecar_build_info'), 1, 'a fact is not summed');
  t.equal(metricValue(m, 'ktls_sidecar_workers', { state: 'configured' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_workers', { state: 'running' }), 2);
  t.equal(metricValue(m, 'ktls_sidecar_worker_scrape_misses_total'), 0);
  const ready = await sc.admin('/readyz');
  t.equal(ready.status, 200, ready.body);
  t.equal((await sc.admin('/healthz')).status, 200);
});

t.test('PUT /ktls reaches every worker before the 200', async (t) => {
  const from = sc.logs.length;
  const put = await adminRequest(sc.adminPort, 'PUT', '/ktls', '{"enabled":false}');
  t.equal(put.status, 200, put.body);
  const body = JSON.parse(put.body) as { enabled: boolean; workers: number; acked: number };
  t.same({ enabled: body.enabled, workers: body.workers, acked: body.acked }, { enabled: false, workers: 2, acked: 2 });
  await spread(from);
  const after = closedLines(from);
  t.same([...new Set(after.map((l) => l['ktls_reason']))], ['flag_off'], 'every new connection of every worker sees the flag');
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_ktls_enabled'), 0);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_flag_changes_total', { source: 'admin' }), 1, 'one change for the pod');
  t.equal((JSON.parse((await sc.admin('/ktls')).body) as { enabled: boolean }).enabled, false);
});

t.test('a worker killed with SIGKILL is replaced, counted, and the pod keeps serving with the pod flag', async (t) => {
  const before = workerPids(sc);
  const [victim, pid] = [...before][0] ?? [0, 0];
  process.kill(pid, 'SIGKILL');
  const exit = await sc.waitForLog((l) => l.event === 'worker_exit' && l['worker'] === victim);
  t.equal(exit['signal'], 'SIGKILL');
  await sc.waitForLog((l) => l.event === 'worker_listening' && !before.has(Number(l['worker'])));
  t.equal(workerPids(sc).size, 3, 'a new worker listens');
  const from = sc.logs.length;
  await spread(from);
  const replacement = [...workerPids(sc).keys()].find((id) => !before.has(id));
  t.ok(closedLines(from).some((l) => l['worker'] === replacement), 'the replacement serves');
  t.same([...new Set(closedLines(from).map((l) => l['ktls_reason']))], ['flag_off'], 'the replacement started with the pod flag, not the config');
  const m = await sc.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_worker_restarts_total', { reason: 'signal' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_workers', { state: 'running' }), 2);
});

t.test('SIGTERM: every worker drains, the in-flight request finishes, exit 0', async (t) => {
  const seen = up.seen.length;
  const inflight = request(sc.tlsPort, { ca: pki.caCert, path: '/slow?ms=1500' });
  await until(() => up.seen.length > seen, 'the upstream to receive the request');
  sc.proc.kill('SIGTERM');
  const r = await inflight;
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'slow\n');
  t.equal(await sc.exited, 0);
  t.equal(sc.logs.filter((l) => l.event === 'drain_done').length, 2, 'both workers drained');
  t.ok(sc.logs.some((l) => l.event === 'exit' && l['role'] === 'primary'));
});

t.test('the config watch and SIGHUP of the primary reach every worker', async (t) => {
  const workers = [...workerPids(hup).keys()];
  t.equal(workers.length, 2);
  const flagLine = (source: string, worker: number) => (l: LogLine) => l.msg === `ktls flag disabled by ${source}` && l['worker'] === worker;
  writeConfig(false);
  await hup.waitForLog((l) => l.msg === 'ktls flag disabled by config_watch' && l['role'] === 'primary');
  for (const w of workers) await hup.waitForLog(flagLine('config_watch', w));
  t.pass('the file change was broadcast to both workers');
  writeConfig(false, 'debug');
  hup.proc.kill('SIGHUP');
  for (const w of workers) {
    const line = await hup.waitForLog((l) => l.event === 'config_reload' && l['trigger'] === 'sighup' && l['worker'] === w);
    t.equal(line['result'], 'success', `worker ${w} reloaded`);
  }
  const m = await hup.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_config_reloads_total', { result: 'success', trigger: 'sighup' }), 1, 'one reload for the pod');
  t.equal(metricValue(m, 'ktls_sidecar_ktls_flag_changes_total', { source: 'config_watch' }), 1, 'one flag change for the pod');
  t.equal(metricValue(m, 'ktls_sidecar_ktls_enabled'), 0);
});

t.test('a crash loop (more than 5 worker exits within 60 s) ends the pod with exit 1', async (t) => {
  const pod = await startSidecar(args);
  t.teardown(() => pod.stop('SIGKILL'));
  const pid = pod.proc.pid ?? 0;
  const children = (): number[] => {
    try {
      return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter((l) => l !== '').map(Number);
    } catch {
      return []; // pgrep exits 1 when there is none (between an exit and the replacement)
    }
  };
  // Kill whatever workers exist (starting or listening) until the primary gives up.
  for (let i = 0; i < 200 && pod.proc.exitCode === null; i++) {
    for (const c of children()) process.kill(c, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(await pod.exited, 1);
  const fatal = pod.logs.find((l) => l.event === 'worker_crash_loop');
  t.equal(fatal?.level, 'fatal');
  t.equal(fatal?.['exits'], 6);
});

t.test('a bad workers value is a config error naming the key (exit 2)', async (t) => {
  for (const r of [await badZero, await badWord]) {
    t.equal(r.code, 2, r.stderr);
    t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.match(r.stderr, /config error: workers: must be auto or a whole number from 1 to 64/);
  }
});
