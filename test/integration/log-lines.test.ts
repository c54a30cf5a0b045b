// The real CLI's log on stdout: the default log.connections (errors) logs a
// refused connection and not a normal one, SIGHUP switches it to all, and the
// last line before exit (written through the asynchronous stdout destination)
// is on stdout when the process is gone.
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { childEnv, followChild } from '../helpers/child-sidecar.js';
import { metricValue } from '../helpers/metrics.js';
import { CLI, ROOT, adminGet } from '../helpers/sidecar.js';

function curl(port: number): Promise<number> {
  return new Promise((resolve) => {
    execFile('curl', ['--noproxy', '*', '-sSk', '-o', '/dev/null', `https://localhost:${port}/`], (err) => resolve(err ? 1 : 0));
  });
}

/** Plain HTTP to the TLS port: refused (plain_http), a failure under `errors`. */
function plainHttp(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.resume();
  });
}

async function eventually(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

t.test('log.connections default, SIGHUP to all, and the last line before exit', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'log:\n  connections: errors\n' });
  const file = join(dir, 'c.yaml');
  const env = childEnv();
  delete env['KTLS_SIDECAR_LOG_CONNECTIONS']; // the helper's default (all) would outrank the file
  const args = ['--demo', '--upstream-url', 'http://127.0.0.1:0', '--listen-host', '127.0.0.1', '--listen-port', '0', '--admin-port', '0', '--config', file];
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const child = followChild(proc, 15_000);
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const port = await child.startup(30_000);
  const tls = Number(port('tls'));
  const admin = Number(port('admin'));
  const closedTotal = async (): Promise<number> => metricValue((await adminGet(admin, '/metrics')).body, 'ktls_sidecar_connections_closed_total');
  const closeLines = (): Record<string, unknown>[] => child.logs.filter((l) => l.event === 'connection_closed');

  t.equal(await curl(tls), 0, 'a normal request');
  await eventually(async () => (await closedTotal()) >= 1, 'the normal connection closed');
  await plainHttp(tls);
  const refused = await child.waitForLog((l) => l.event === 'connection_closed' && l['close_reason'] === 'plain_http');
  t.equal(refused['protocol'], 'none');
  t.same(closeLines().map((l) => l['close_reason']), ['plain_http'], 'errors (the default): the refusal is logged, the normal close is not');

  writeFileSync(file, 'log:\n  connections: all\n');
  proc.kill('SIGHUP');
  await child.waitForLog((l) => l.event === 'config_reload' && l['result'] === 'success');
  t.equal(await curl(tls), 0);
  const normal = await child.waitForLog((l) => l.event === 'connection_closed' && l['protocol'] !== 'none');
  // curl over HTTP/2 often resets at exit instead of closing: both are a normal end.
  t.match(normal['close_reason'], /^client_(close|reset)$/, 'after SIGHUP (all) the normal close is logged');

  proc.kill('SIGTERM');
  t.equal(await child.exited, 0);
  const last = child.logs.at(-1);
  t.match(last, { event: 'exit', code: 0, msg: 'stopped' }, 'the last line written before process.exit() reached stdout');
  t.equal(child.logs.filter((l) => l.event === 'shutdown').length, 1);
});
