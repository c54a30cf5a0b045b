// The stdout destination (proxy/log.ts stdoutDestination) on a real pipe: a
// log call never waits for the reader, lines arrive whole and in order, each
// write(2) is whole lines of at most PIPE_BUF bytes, and with a reader that
// stops reading the buffer is bounded: lines past it are dropped and one
// log_lines_dropped line counts them once writes move again.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { LOG_WRITE_MAX_BYTES, createLogger, stdoutDestination } from '../../proxy/log.js';

interface Dest {
  flushSync(): void;
  destroy(): void;
  on(event: 'close', cb: () => void): void;
}

/** A FIFO with a non-blocking read end (not read until the test says so) and a blocking write end. */
function pipe(t: Test): { readFd: number; writeFd: number; readAll(): string } {
  const dir = t.testdir({});
  const fifo = join(dir, 'stdout');
  execFileSync('mkfifo', [fifo]);
  const readFd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writeFd = fs.openSync(fifo, 'w');
  const buf = Buffer.alloc(1 << 16);
  return {
    readFd,
    writeFd,
    readAll: () => {
      let out = '';
      for (;;) {
        let n: number;
        try {
          n = fs.readSync(readFd, buf, 0, buf.length, null);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return out;
          throw err;
        }
        if (n === 0) return out;
        out += buf.subarray(0, n).toString('utf8');
      }
    },
  };
}

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('lines arrive whole and in order; a stalled reader costs bounded memory and a count of what was dropped', async (t) => {
  const p = pipe(t);
  const MAX = 256 * 1024;
  const dest = stdoutDestination(p.writeFd, MAX);
  const writes: number[] = [];
  (dest as unknown as { on(e: 'write', cb: (n: number) => void): void }).on('write', (n) => writes.push(n));
  const logger = createLogger({ destination: dest });
  const N = 4000;
  const pad = 'x'.repeat(400);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) logger.info({ event: 'n', i, pad }, 'line');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  // ~2 MB of lines against a 64 KiB pipe nobody reads: a synchronous write would block here for good.
  t.ok(ms < 5000, `${N} lines logged in ${ms.toFixed(0)} ms with nobody reading`);
  await tick(300);

  let text = '';
  for (let i = 0; i < 100 && !text.includes('log_lines_dropped'); i++) {
    text += p.readAll();
    await tick(20);
  }
  for (let i = 0; i < 10; i++) {
    text += p.readAll();
    await tick(20);
  }
  const lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  const normal = lines.filter((l) => l['event'] === 'n');
  const notice = lines.find((l) => l['event'] === 'log_lines_dropped');
  t.ok(notice, 'a log_lines_dropped line');
  t.equal(notice?.['level'], 'warn');
  t.ok(normal.length * 450 < MAX + 2 * 65536, `bounded: ${normal.length} lines came through (buffer ${MAX} B + the pipe)`);
  t.equal(normal.length + Number(notice?.['lines']), N, 'every line is either written or counted as dropped');
  const idx = normal.map((l) => Number(l['i']));
  t.same(idx, [...idx].sort((a, b) => a - b), 'in order');
  t.same(idx, [...Array(idx.length).keys()], 'the first lines, whole, none missing in between');

  // Each write(2) is whole lines of at most PIPE_BUF bytes (atomic on a pipe: the
  // processes of workers: N share stdout and never interleave inside a line).
  t.ok(writes.length > 0 && writes.every((n) => n <= LOG_WRITE_MAX_BYTES), `${writes.length} writes, largest ${Math.max(...writes)} B`);
  const bytes = Buffer.from(text);
  let at = 0;
  const ends: boolean[] = writes.map((n) => {
    at += n;
    return bytes[at - 1] === 0x0a;
  });
  t.ok(ends.every(Boolean), 'every write ends at the end of a line');

  const d = dest as unknown as Dest;
  d.destroy();
  fs.closeSync(p.readFd);
});
