// What one log line costs the event loop: µs per connection close line and per
// line with a nested object, for the logger before issue 12 (pino `redact` with
// 36 wildcard paths), for pino with a top-level-only path list (the reference
// the issue names) and for the logger now (proxy/log.ts: censorSecrets() in the
// log formatter). A null sink, so the figure is building, censoring and
// serializing the line; a second table adds the write to a pipe, one
// synchronous write(2) per line (before) against the batched asynchronous
// destination (now).
//
//   taskset -c 1 node --import tsx bench/log-cost.ts [--lines N] [--runs R]
//
// Prints the median of R runs (min..max) of N lines each, after a warm-up.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino, type DestinationStream, type Logger } from 'pino';
import { type ConnectionCloseFacts, createLogger, logConnectionClose, stdoutDestination } from '../proxy/log.js';

const { values } = parseArgs({ options: { lines: { type: 'string', default: '50000' }, runs: { type: 'string', default: '7' } } });
const LINES = Number(values.lines);
const RUNS = Number(values.runs);

/** The redaction of proxy/log.ts before issue 12, verbatim. */
const SECRET_FIELDS_BEFORE = ['key', 'privateKey', 'passphrase', 'password', 'secret', 'masterSecret', 'trafficSecret', 'token', 'authorization', 'cookie', 'iv', 'salt'];
const REDACT_PATHS_BEFORE = [
  ...SECRET_FIELDS_BEFORE.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]),
  'req.headers["proxy-authorization"]',
  'headers["proxy-authorization"]',
  '*.headers["proxy-authorization"]',
  'req.headers["set-cookie"]',
  'res.headers["set-cookie"]',
];

function pinoWith(paths: readonly string[], dest: DestinationStream): Logger {
  return pino(
    {
      level: 'info',
      base: { name: 'ktls-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...paths], censor: '[Redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
}

const nullSink: DestinationStream = { write: () => undefined };

const close: ConnectionCloseFacts = {
  id: 123456,
  remoteAddress: '10.244.3.17',
  remotePort: 51234,
  servername: 'api.shop.example.com',
  protocol: 'http1',
  tlsVersion: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  alpn: 'http/1.1',
  bytesIn: 1432,
  bytesOut: 18230,
  durationMs: 12.7,
  closeReason: 'client_close',
  ktls: 'on',
  ktlsReason: 'enabled',
  direction: 'tx',
  ktlsInfo: { record_layer: 'kernel', tx: 'kernel', rx: 'js', decision: 'enabled', key_updates_rx: 0, key_updates_tx: 0, close_notify_rx: true, close_notify_tx: true, records_tx: 3, records_rx: 2 },
};
const nested = {
  event: 'upstream_request',
  conn: 123456,
  req: { method: 'GET', url: '/api/v1/items?page=2', headers: { host: 'api.shop.example.com', 'user-agent': 'curl/8.5.0', accept: '*/*' } },
  upstream: { host: '127.0.0.1', port: 8080, socket: { reused: true, idle_ms: 1200 } },
};

type Line = (l: Logger) => void;
const LINE_KINDS: Record<string, Line> = {
  'close line': (l) => logConnectionClose(l, close),
  'nested object': (l) => l.info(nested, 'upstream request'),
};

/** µs per line over `n` lines. */
function time(logger: Logger, line: Line, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) line(logger);
  return Number(process.hrtime.bigint() - t0) / 1000 / n;
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)] ?? NaN;
  return `${med.toFixed(2)} (${(s[0] ?? NaN).toFixed(2)}..${(s.at(-1) ?? NaN).toFixed(2)})`;
}

/** Median µs per line for each logger × line kind; runs interleave the loggers so drift hits all alike. */
async function table(title: string, loggers: Record<string, () => Logger>, settle: () => Promise<void>): Promise<void> {
  console.log(`\n${title} — µs per line, median (min..max) of ${RUNS} runs × ${LINES} lines`);
  console.log(`| logger | ${Object.keys(LINE_KINDS).join(' | ')} |`);
  console.log(`|---|${Object.keys(LINE_KINDS).map(() => '---:').join('|')}|`);
  const built = Object.fromEntries(Object.entries(loggers).map(([k, make]) => [k, make()]));
  const results: Record<string, Record<string, number[]>> = {};
  for (const [name, logger] of Object.entries(built)) {
    results[name] = {};
    for (const [kind, line] of Object.entries(LINE_KINDS)) {
      time(logger, line, Math.min(LINES, 20_000)); // warm-up (JIT)
      results[name][kind] = [];
    }
  }
  await settle();
  for (let r = 0; r < RUNS; r++) {
    for (const [name, logger] of Object.entries(built)) {
      for (const [kind, line] of Object.entries(LINE_KINDS)) {
        results[name]?.[kind]?.push(time(logger, line, LINES));
        await settle();
      }
    }
  }
  for (const [name, byKind] of Object.entries(results)) console.log(`| ${name} | ${Object.values(byKind).map(stats).join(' | ')} |`);
}

const cpus = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '?';
console.log(`log-cost: node ${process.version}, pino ${pino.version}, CPUs allowed: ${cpus}${cpus.includes('-') || cpus.includes(',') ? ' (not pinned: run under taskset -c N)' : ''}`);

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
await table(
  'Building + censoring + serializing (null sink)',
  {
    'before: pino redact, 41 paths (36 wildcards)': () => pinoWith(REDACT_PATHS_BEFORE, nullSink),
    'pino redact, 14 top-level paths only': () => pinoWith(['key', 'privateKey', 'passphrase', 'password', 'secret', 'masterSecret', 'trafficSecret', 'token', 'authorization', 'cookie', 'iv', 'salt', '["proxy-authorization"]', '["set-cookie"]'], nullSink),
    'pino, no redaction at all': () => pinoWith([], nullSink),
    'now: createLogger (censorSecrets, depth 4)': () => createLogger({ destination: nullSink }),
  },
  tick,
);

// With the write, to a pipe read by `cat > /dev/null` (a container's stdout is
// a pipe to its runtime). Each run ends when the asynchronous destination has
// written everything (its flush), so its time is what the event loop paid,
// not a deferred bill.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'log-cost-'));
const fifo = path.join(dir, 'stdout');
execFileSync('mkfifo', [fifo]);
// The reader runs on another CPU than a pinned bench, as the runtime's reader would.
const readerCpu = /^\d+$/.test(cpus) ? String((Number(cpus) + 1) % os.cpus().length) : '';
const readCmd = `${readerCpu ? `exec taskset -c ${readerCpu} ` : 'exec '}cat "$0" > /dev/null`;
const reader = spawn('sh', ['-c', readCmd, fifo], { stdio: 'ignore' });
const pipeFd = fs.openSync(fifo, 'w');
const asyncDest = stdoutDestination(pipeFd) as DestinationStream & NodeJS.EventEmitter & { flush(cb?: (err?: Error | null) => void): void; end(): void };
await table(
  'Including the write to a pipe (cat > /dev/null)',
  {
    'before: redact 41 paths, sync write per line': () => pinoWith(REDACT_PATHS_BEFORE, pino.destination({ dest: pipeFd, sync: true })),
    'createLogger, sync write per line': () => createLogger({ destination: pino.destination({ dest: pipeFd, sync: true }) }),
    'now: createLogger, async batched destination': () => createLogger({ destination: asyncDest }),
  },
  () => new Promise<void>((r) => asyncDest.flush(() => r())),
);
// The asynchronous destination owns the fd from here: end() writes what is left and closes it. Closing the fd
// under it instead lets its periodic flush write to a closed fd (EBADF, an unhandled 'error').
await new Promise<void>((r) => {
  asyncDest.once('close', () => r());
  asyncDest.end();
});
reader.kill();
fs.rmSync(dir, { recursive: true, force: true });
