// bench/lib/proc.ts compilerShare(): the part of a process tree's CPU that V8's
// compiler threads used between two snapshots, what BENCH_FRESH warms a new
// sidecar process until it is small (bench/run.ts).
import t from 'tap';
import { compilerShare, type ThreadCpu } from '../../bench/lib/proc.js';

const snap = (e: Record<string, [number, number]>): ThreadCpu => new Map(Object.entries(e).map(([k, [user, sys]]) => [k, { user, sys }]));

t.test('the V8Worker threads\' share of the CPU used between the snapshots', (t) => {
  const before = snap({ 'root/MainThread': [10, 1], 'root/V8Worker': [4, 0], 'root/libuv-worker': [0, 0] });
  const after = snap({ 'root/MainThread': [16, 2], 'root/V8Worker': [6, 0], 'root/libuv-worker': [0.5, 0.5] });
  t.equal(compilerShare(before, after).toFixed(4), (2 / (7 + 2 + 1)).toFixed(4));
  t.end();
});

t.test('threads born between the snapshots count from zero; child processes count too', (t) => {
  const before = snap({ 'root/MainThread': [1, 0] });
  const after = snap({ 'root/MainThread': [2, 0], 'child/V8Worker': [1, 0] });
  t.equal(compilerShare(before, after), 0.5);
  t.end();
});

t.test('no CPU used: 0, not NaN', (t) => {
  const s = snap({ 'root/MainThread': [1, 0], 'root/V8Worker': [1, 0] });
  t.equal(compilerShare(s, s), 0);
  t.end();
});
