import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startChild } from '../../bench/lib/tools.js';

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('BENCH_CHILD_LOGS: the whole output in <dir>/<name>-<pid>.log, a mark on a line of its own', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-child-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Prints half a line, waits, then ends that line and writes one to stderr.
  const script = "process.stdout.write('abc'); setTimeout(() => { process.stdout.write('def\\n'); process.stderr.write('err\\n'); }, 300);";
  const c = startChild([process.execPath, '-e', script], undefined, { dir, name: 'sidecar-tx' });
  await until('the first half line', () => c.out() === 'abc');
  c.mark('bench-window begin system=sidecar-tx');
  await c.exited;
  const file = path.join(dir, `sidecar-tx-${c.proc.pid}.log`);
  t.same(readdirSync(dir), [path.basename(file)], 'one file, named by system and pid');
  await until('the file complete', () => readFileSync(file, 'utf8').endsWith('err\n'));
  t.equal(readFileSync(file, 'utf8'), 'abc\nbench-window begin system=sidecar-tx\ndef\nerr\n', 'the mark did not split or join a line of the child');
  t.doesNotThrow(() => c.mark('after the end'), 'a mark after the child closed is dropped');
  t.equal(c.out(), 'abc' + 'def\n', 'stdout is still kept for error messages');
});

t.test('without a log, mark does nothing and nothing is written', async (t) => {
  const c = startChild([process.execPath, '-e', "process.stdout.write('x')"]);
  c.mark('nowhere');
  await c.exited;
  t.equal(c.out(), 'x');
});
