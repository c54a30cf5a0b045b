// What the bench needs around the proxies: the tools (installed from apt when missing and running as root), the
// CPU plan (which core runs what), the certificate, the origin, and child processes with their output kept.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';

/** Command (or a file the bench loads: nginx's stream module for the L4 floor) -> Debian package. */
const TOOLS: Record<string, string> = {
  nginx: 'nginx', 'nginx-stream': 'libnginx-mod-stream', wrk: 'wrk', cc: 'gcc', taskset: 'util-linux', openssl: 'openssl',
};
/** The nginx stream module (the L4 floor's relay). */
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';
const FILES: Record<string, string> = { 'nginx-stream': NGINX_STREAM_MODULE };

export function has(cmd: string): boolean {
  const file = FILES[cmd];
  if (file) return existsSync(file);
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Makes sure the tools are there. On the host, as root, `apt-get install -y` what is missing; otherwise one
 * error line naming the packages. `optional` tools (the lab's guest has no network: nginx may be absent there)
 * are reported missing instead, and the caller skips what needs them.
 */
export function ensureTools(canInstall: boolean, optional: readonly string[]): Set<string> {
  let missing = Object.keys(TOOLS).filter((c) => !has(c));
  if (missing.length && canInstall && process.getuid?.() === 0) {
    const pkgs = [...new Set(missing.map((c) => TOOLS[c]!))];
    console.log(`bench: installing ${pkgs.join(' ')} (apt-get)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    // Serialised with the lab's setup (same lock), so two jobs provisioning one machine do not collide.
    const run = (args: string[]): void => {
      execFileSync('flock', ['-w', '900', '/tmp/apt.lock', 'apt-get', '-o', 'DPkg::Lock::Timeout=300', '-qq', ...args], { stdio: 'inherit', env });
    };
    run(['update']);
    run(['install', '-y', '--no-install-recommends', ...pkgs]);
    missing = missing.filter((c) => !has(c));
  }
  const fatal = missing.filter((c) => !optional.includes(c));
  if (fatal.length) {
    const pkgs = [...new Set(fatal.map((c) => TOOLS[c]!))];
    throw new Error(`bench: missing ${fatal.join(', ')}; install them: apt-get install -y ${pkgs.join(' ')}${canInstall ? ' (or run the bench as root)' : ''}`);
  }
  return new Set(missing);
}

/** Cores: the proxy under test alone on one, the load generator (and the origin) on another. */
export interface CpuPlan { cores: number; proxy: string | null; client: string | null; origin: string | null; note: string }

export function cpuPlan(): CpuPlan {
  const cores = availableParallelism();
  if (cores < 2) return { cores, proxy: null, client: null, origin: null, note: '1 core: nothing pinned (proxy, wrk and origin share it)' };
  const origin = cores >= 3 ? '2' : '1';
  return { cores, proxy: '0', client: '1', origin, note: `${cores} cores: proxy on core 0, wrk on core 1, origin on core ${origin}` };
}

/** argv prefixed with `taskset -c CORE` (taskset execs: the pid stays the command's). */
export function pinned(core: string | null, argv: string[]): string[] {
  return core === null ? argv : ['taskset', '-c', core, ...argv];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export function makeCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

/**
 * A child process whose stdout/stderr are kept (last 64 KiB each) for error messages. With a `log` (see
 * startChild), everything it prints also goes to a file, and `mark` writes a line of the caller's among it.
 */
export interface Child { proc: ChildProcess; out: () => string; err: () => string; exited: Promise<void>; mark: (line: string) => void }

/**
 * `log`: also append all of the child's stdout and stderr to `<dir>/<name>-<pid>.log` (e.g. V8's --trace-*
 * output, which is far more than the 64 KiB kept), with `mark` lines between, in the order they arrived here.
 */
export function startChild(argv: string[], env?: NodeJS.ProcessEnv, log?: { dir: string; name: string }): Child {
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let out = '';
  let err = '';
  const file = log && proc.pid !== undefined ? createWriteStream(path.join(log.dir, `${log.name}-${proc.pid}.log`), { flags: 'a' }) : null;
  file?.on('error', (e) => { console.error(`bench: child log: ${e.message}`); });
  const keep = (s: string): string => (s.length > 65536 ? s.slice(-65536) : s);
  // A chunk can end mid-line: a mark then starts a line of its own.
  let midLine = false;
  let ended = false;
  const toFile = (d: string): void => {
    if (!file || ended || d.length === 0) return;
    file.write(d);
    midLine = !d.endsWith('\n');
  };
  proc.stdout.setEncoding('utf8').on('data', (d: string) => { out = keep(out + d); toFile(d); });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => { err = keep(err + d); toFile(d); });
  proc.once('close', () => { ended = true; file?.end(); });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { proc, out: () => out, err: () => err, exited, mark: (line) => { toFile(`${midLine ? '\n' : ''}${line}\n`); } };
}

export function running(c: Child): boolean {
  return c.proc.exitCode === null && c.proc.signalCode === null;
}

/** Waits for a "listening <port>" line on stdout (the origin and the plain Node peer print one). */
export async function waitListening(c: Child, what: string, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const m = /listening (\d+)/.exec(c.out());
    if (m) return Number(m[1]);
    if (!running(c)) throw new Error(`${what} exited: ${c.err().trim() || c.out().trim()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not start within ${ms / 1000} s`);
}

/** Stops a child: SIGTERM (lets --cpu-prof write its file), SIGKILL after `graceMs`. */
export async function stopChild(c: Child, graceMs: number): Promise<void> {
  if (!running(c)) return;
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), graceMs);
  await c.exited;
  clearTimeout(t);
}

/** Compiles bench/origin.c into `dir` and starts it on the origin's core. */
export async function startOrigin(root: string, dir: string, plan: CpuPlan): Promise<{ child: Child; port: number }> {
  const bin = path.join(dir, 'origin');
  execFileSync('cc', ['-O2', '-o', bin, path.join(root, 'bench/origin.c')], { stdio: 'inherit' });
  const child = startChild(pinned(plan.origin, [bin, '0']));
  return { child, port: await waitListening(child, 'origin', 10_000) };
}

/** First line of a version banner, e.g. `nginx -v` (printed on stderr). */
export function versionOf(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.split('\n').find((l) => l.trim())?.trim() ?? '?';
}
