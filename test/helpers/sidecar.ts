// Spawn the real CLI (TypeScript source through tsx) on port 0 and learn its
// ports from the startup log line. Logs are kept for assertions.
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminRequest, childEnv, followChild, type LogLine } from './child-sidecar.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'proxy/cli.ts');

export { childEnv, type LogLine };

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
  return adminRequest(port, 'GET', pathname);
}

/** Start the sidecar with `args` (port flags are added). Rejects if it exits before the startup line. */
export function startSidecar(args: string[], env: Record<string, string> = {}): Promise<RunningSidecar> {
  const full = ['--listen-host', '127.0.0.1', '--listen-port', '0', '--admin-port', '0', ...args];
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...full], { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const child = followChild(proc, 15_000);
  return child.startup(20_000).then((port) => {
    const adminPort = Number(port('admin'));
    return {
      proc,
      tlsPort: Number(port('tls')),
      adminPort,
      demoUpstreamPort: port('demo-upstream'),
      logs: child.logs,
      stderr: child.stderr,
      exited: child.exited,
      waitForLog: child.waitForLog,
      metrics: async () => (await adminGet(adminPort, '/metrics')).body,
      admin: (p) => adminGet(adminPort, p),
      stop: async (signal = 'SIGTERM') => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
        const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
        const code = await child.exited;
        clearTimeout(t);
        return code;
      },
    };
  });
}
