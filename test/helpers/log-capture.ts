// A logger whose JSON lines land in memory, for tests that check what was logged.
import { Writable } from 'node:stream';
import { createLogger } from '../../proxy/log.js';

export interface CapturedLog {
  /** Every line, parsed. */
  lines: Record<string, unknown>[];
  /** Every line as written (to check the exact text, e.g. that a secret is absent). */
  raw: string[];
  logger: ReturnType<typeof createLogger>;
}

export function captureLog(level: 'info' | 'debug' = 'debug'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) {
        if (!l) continue;
        raw.push(l);
        lines.push(JSON.parse(l) as Record<string, unknown>);
      }
      cb();
    },
  });
  return { lines, raw, logger: createLogger({ level, destination: sink }) };
}
