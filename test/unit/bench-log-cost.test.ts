// `npm run bench:log` must end cleanly: it once closed the pipe's fd under the
// asynchronous destination, whose later write died with an unhandled EBADF after
// the tables were printed (exit code 1). Tiny sizes: this checks the script, not
// the figures (those are benchmarks, never timed assertions).
import { spawnSync } from 'node:child_process';
import t from 'tap';

t.test('bench/log-cost.ts runs to the end and exits 0', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/log-cost.ts', '--lines', '500', '--runs', '1'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 0, `exit code 0 (stderr: ${r.stderr.slice(0, 400)})`);
  t.match(r.stdout, /Including the write to a pipe/, 'the pipe table is printed');
  t.match(r.stdout, /now: createLogger, async batched destination \| [\d.]+/, 'with a figure for the batched destination');
  t.notMatch(r.stderr, /EBADF|Unhandled/, 'no error after the tables');
  t.end();
});
