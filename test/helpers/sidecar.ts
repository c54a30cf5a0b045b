// Spawn the real CLI (TypeScript source through tsx) on port 0 and learn its
// ports from the startup log line. Logs are kept for assertions.
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'proxy/cli.ts');

/**
 * The child's environment: tap's coverage hooks (NODE_OPTIONS imports,
 * NODE_V8_COVERAGE) are dropped so the sidecar runs at normal speed.
 */
export function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env['NODE_OPTIONS'];
  delete env['NODE_V8_COVERAGE'];
  return env;
}

export interface LogLine {
  level?: string;
  msg?: string;
  event?: string;
  [k: string]: unknown;
}

export interface RunningSidecar {
  proc: ChildProcess;
  tlsPort: number;
  adminPort: number;
  demoUpstreamPort?: number;
  logs: LogLine[];
  stderr: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  metrics(): Promise<string>;
  admin(pathname: string): Promise<{ status: number; body: string }>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI to completion (config errors, --version). */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

export function adminGet(port: number, pathname: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** Start the sidecar with `args` (port flags are added). Rejects if it exits before the startup line. */
export function startSidecar(args: string[], env: Record<string, string> = {}): Promise<RunningSidecar> {
  const full = ['--listen-host', '127.0.0.1', '--listen-port', '0', '--admin-port', '0', ...args];
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...full], { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: LogLine[] = [];
  const waiters = new Set<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  let err = '';
  let buf = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { msg: line };
      }
      logs.push(parsed);
      for (const w of waiters) {
        if (w.pred(parsed)) {
          waiters.delete(w);
          w.resolve(parsed);
        }
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  // A test file that fails before its teardown must not leave sidecars behind.
  const reap = (): void => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  process.once('exit', reap);
  void exited.then(() => process.off('exit', reap));
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> => {
    const hit = logs.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (l: LogLine) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`log line not seen in ${timeoutMs} ms; stderr: ${err}`));
      }, timeoutMs);
      waiters.add(w);
    });
  };
  return new Promise((resolve, reject) => {
    void exited.then((code) => reject(new Error(`sidecar exited (${code}) before starting: ${err}`)));
    waitForLog((l) => l.event === 'startup', 20_000).then((line) => {
      const listeners = line['listeners'] as Array<{ name: string; address: string }>;
      const port = (name: string): number => Number(listeners.find((l) => l.name === name)?.address.split(':').pop());
      const adminPort = port('admin');
      const demo = listeners.find((l) => l.name === 'demo-upstream');
      resolve({
        proc,
        tlsPort: port('tls'),
        adminPort,
        demoUpstreamPort: demo ? port('demo-upstream') : undefined,
        logs,
        stderr: () => err,
        exited,
        waitForLog,
        metrics: async () => (await adminGet(adminPort, '/metrics')).body,
        admin: (p) => adminGet(adminPort, p),
        stop: async (signal = 'SIGTERM') => {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
          const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
          const code = await exited;
          clearTimeout(t);
          return code;
        },
      });
    }, reject);
  });
}
