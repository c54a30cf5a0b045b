// The load generator: wrk, keep-alive, one thread, fixed connections, pinned to the client core. Its Lua done()
// hook prints one machine-readable line: requests, bytes read, errors by kind and latency percentiles.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pinned } from './tools.js';

export interface WrkResult {
  requests: number;
  /** Bytes wrk read (heads and bodies, including a partial response cut at the end of the run). */
  bytes: number;
  durationS: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

const DONE_LUA = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-WRK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
`;

export function writeWrkScript(dir: string): string {
  const file = path.join(dir, 'bench-done.lua');
  writeFileSync(file, DONE_LUA);
  return file;
}

export interface WrkOptions {
  url: string;
  seconds: number;
  connections: number;
  timeoutS: number;
  core: string | null;
  script: string;
  /** `Connection: close` on every request: wrk opens a new connection for each. */
  closeEach?: boolean;
}

export function runWrk(o: WrkOptions): Promise<WrkResult> {
  const close = o.closeEach ? ['-H', 'Connection: close'] : [];
  const argv = pinned(o.core, ['wrk', '-t1', `-c${o.connections}`, `-d${o.seconds}s`, `--timeout`, `${o.timeoutS}s`, ...close, '-s', o.script, o.url]);
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { encoding: 'utf8', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const m = /BENCH-WRK (.*)/.exec(stdout);
      if (err || !m) {
        reject(new Error(`wrk ${o.url} failed: ${err?.message ?? ''} ${stderr.trim()} ${stdout.trim().split('\n').slice(-3).join(' | ')}`));
        return;
      }
      const v = new Map(m[1]!.trim().split(' ').map((kv) => kv.split('=') as [string, string]));
      const n = (k: string): number => Number(v.get(k));
      resolve({
        requests: n('requests'),
        bytes: n('bytes'),
        durationS: n('duration_us') / 1e6,
        errors: { connect: n('connect'), read: n('read'), write: n('write'), status: n('status'), timeout: n('timeout') },
        p50Us: n('p50_us'),
        p90Us: n('p90_us'),
        p99Us: n('p99_us'),
        maxUs: n('max_us'),
      });
    });
  });
}

export function errorCount(r: WrkResult): number {
  const e = r.errors;
  return e.connect + e.read + e.write + e.status + e.timeout;
}

export function errorText(r: WrkResult): string {
  return Object.entries(r.errors).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(',');
}
