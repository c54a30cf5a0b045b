// What the host (test/helpers/sidecar.ts) and the kernel-lab
// (test/kernel/helpers/sidecar-lab.ts) sidecar helpers share, kept in one place
// so the two cannot drift: the child's environment, its JSON log lines with
// waiters, the ports from its startup line, and admin requests.
// (Also compiled for the lab VM: keep it to node: imports.)
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';

export interface LogLine {
  level?: string;
  msg?: string;
  event?: string;
  [k: string]: unknown;
}

/**
 * The child's environment: tap's coverage hooks (NODE_OPTIONS imports,
 * NODE_V8_COVERAGE) are dropped so the sidecar runs at normal speed.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // log.connections all: tests read every close line (the default, errors, logs failures only).
  const env: NodeJS.ProcessEnv = { KTLS_SIDECAR_LOG_CONNECTIONS: 'all', ...process.env, ...extra };
  delete env['NODE_OPTIONS'];
  delete env['NODE_V8_COVERAGE'];
  return env;
}

export interface ChildLogs {
  /** Every stdout line so far, parsed (a non-JSON line becomes `{ msg }`). */
  logs: LogLine[];
  stderr: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  /** The first line (seen or to come) that matches; rejects after `timeoutMs`. */
  waitForLog: (pred: (l: LogLine) => boolean, timeoutMs?: number) => Promise<LogLine>;
  /** The listener ports from the `startup` line; rejects if the child exits first. */
  startup: (timeoutMs?: number) => Promise<(listener: string) => number | undefined>;
}

/**
 * Follow a spawned sidecar's JSON log on stdout and its stderr. The child is
 * killed if the test process exits first (a test file that fails before its
 * teardown must not leave sidecars behind).
 */
export function followChild(proc: ChildProcess, defaultTimeoutMs: number): ChildLogs {
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
  const reap = (): void => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  process.once('exit', reap);
  void exited.then(() => process.off('exit', reap));
  const stderrTail = (): string => err.slice(-2000);
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = defaultTimeoutMs): Promise<LogLine> => {
    const hit = logs.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`log line not seen in ${timeoutMs} ms; stderr: ${stderrTail()}`));
      }, timeoutMs);
      waiters.add(w);
    });
  };
  const startup = async (timeoutMs = defaultTimeoutMs): Promise<(listener: string) => number | undefined> => {
    const line = await Promise.race([
      waitForLog((l) => l.event === 'startup', timeoutMs),
      exited.then((code) => {
        throw new Error(`sidecar exited (${code}) before starting: ${stderrTail()}`);
      }),
    ]);
    const listeners = line['listeners'] as Array<{ name: string; address: string }>;
    return (name) => {
      const address = listeners.find((l) => l.name === name)?.address;
      return address === undefined ? undefined : Number(address.split(':').pop());
    };
  };
  return { logs, stderr: () => err, exited, waitForLog, startup };
}

/** One request to the admin listener (JSON body if any). */
export function adminRequest(port: number, method: string, pathname: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: pathname, method, agent: false, headers: body ? { 'content-type': 'application/json' } : {} },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
