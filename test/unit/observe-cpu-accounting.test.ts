import t from 'tap';
import { CostModel, CpuAccounting, splitInterval } from '../../proxy/observe/cpu-accounting.js';

const MIB = 1024 * 1024;

// A deterministic pseudo-random mix (no Math.random: reproducible failures).
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

t.test('split always adds up to the measured delta', (t) => {
  const est = { onPerMiB: 0.001, offPerMiB: 0.004, fixed: 0.01 };
  for (const [cpu, on, off] of [[1, 100 * MIB, 50 * MIB], [0.05, 100 * MIB, 50 * MIB], [0.3, 0, 10 * MIB], [0.3, 10 * MIB, 0]] as const) {
    for (const e of [est, null]) {
      const s = splitInterval(cpu, on, off, e);
      t.ok(Math.abs(s.on + s.off + s.none - cpu) < 1e-12, `${cpu} ${on} ${off} ${e ? 'fit' : 'bytes'}`);
      t.ok(s.on >= 0 && s.off >= 0);
    }
  }
  t.end();
});

t.test('no bytes: the interval is idle', (t) => {
  t.strictSame(splitInterval(0.2, 0, 0, null), { on: 0, off: 0, none: 0.2, method: 'idle' });
  t.end();
});

t.test('without an estimate the split is by bytes', (t) => {
  const s = splitInterval(1, 3 * MIB, 1 * MIB, null);
  t.equal(s.method, 'bytes');
  t.ok(Math.abs(s.on - 0.75) < 1e-12 && Math.abs(s.off - 0.25) < 1e-12);
  t.end();
});

t.test('with an estimate, the cheaper mode gets less per byte', (t) => {
  // Equal bytes; off costs 4x per byte.
  const s = splitInterval(0.5 + 0.1, 100 * MIB, 100 * MIB, { onPerMiB: 0.001, offPerMiB: 0.004, fixed: 0.1 });
  t.equal(s.method, 'fit');
  t.ok(Math.abs(s.on - (0.1 + 0.05)) < 1e-9, `on ${s.on}`);
  t.ok(Math.abs(s.off - (0.4 + 0.05)) < 1e-9, `off ${s.off}`);
  t.end();
});

t.test('noise above the model is scaled, never negative', (t) => {
  const s = splitInterval(0.1, 100 * MIB, 100 * MIB, { onPerMiB: 0.001, offPerMiB: 0.004, fixed: 0 });
  t.ok(Math.abs(s.on + s.off - 0.1) < 1e-12);
  t.ok(Math.abs(s.off / s.on - 4) < 1e-9);
  t.end();
});

t.test('the fit recovers per-mode costs from a traffic mix that varies', (t) => {
  const rnd = lcg(7);
  const m = new CostModel({ lambda: 1 });
  const a = 0.0012; // s per MiB with kTLS
  const b = 0.0050; // s per MiB userspace
  const c = 0.02;
  for (let i = 0; i < 200; i++) {
    const on = 50 + 100 * rnd();
    const off = 50 + 100 * rnd();
    const noise = (rnd() - 0.5) * 0.002;
    m.add(on, off, a * on + b * off + c + noise);
  }
  const e = m.estimate();
  t.ok(e, 'identifiable');
  t.ok(Math.abs(e!.onPerMiB - a) / a < 0.05, `on ${e!.onPerMiB}`);
  t.ok(Math.abs(e!.offPerMiB - b) / b < 0.05, `off ${e!.offPerMiB}`);
  t.ok(Math.abs(e!.fixed - c) < 0.005, `fixed ${e!.fixed}`);
  t.end();
});

t.test('not identifiable: one mode only, or a constant mix, or too few samples', (t) => {
  const onlyOn = new CostModel();
  for (let i = 0; i < 20; i++) onlyOn.add(10 + i, 0, 0.01 * (10 + i));
  t.equal(onlyOn.estimate(), null);
  const constant = new CostModel();
  for (let i = 0; i < 20; i++) constant.add(10, 10, 0.05);
  t.equal(constant.estimate(), null);
  const few = new CostModel({ minSamples: 6 });
  for (let i = 0; i < 5; i++) few.add(10 + i, 20 - i, 0.05 + i * 0.001);
  t.equal(few.estimate(), null);
  t.end();
});

t.test('CpuAccounting: cpuUsage deltas and bytes per interval', (t) => {
  let user = 0;
  let system = 0;
  const splits: string[] = [];
  const totals = { on: 0, off: 0, none: 0 };
  const acc = new CpuAccounting({
    cpuUsage: () => ({ user, system }),
    onSplit: (s) => {
      splits.push(s.method);
      totals.on += s.on;
      totals.off += s.off;
      totals.none += s.none;
    },
  });
  user += 300_000;
  system += 100_000; // 0.4 s
  acc.addBytes('on', 3 * MIB);
  acc.addBytes('off', 1 * MIB);
  const s1 = acc.sample();
  t.ok(Math.abs(s1.on - 0.3) < 1e-12 && Math.abs(s1.off - 0.1) < 1e-12);
  user += 200_000; // idle interval
  const s2 = acc.sample();
  t.equal(s2.none, 0.2);
  t.ok(Math.abs(totals.on + totals.off + totals.none - 0.6) < 1e-12);
  t.strictSame(splits, ['bytes', 'idle']);
  t.end();
});

t.test('CpuAccounting switches to the fit once identifiable', (t) => {
  const rnd = lcg(3);
  let user = 0;
  const model = new CostModel();
  const acc = new CpuAccounting({ cpuUsage: () => ({ user, system: 0 }), model });
  let last = acc.sample();
  for (let i = 0; i < 30; i++) {
    const on = 20 + 80 * rnd();
    const off = 20 + 80 * rnd();
    acc.addBytes('on', on * MIB);
    acc.addBytes('off', off * MIB);
    user += (0.001 * on + 0.004 * off + 0.01) * 1e6;
    last = acc.sample();
  }
  t.equal(last.method, 'fit');
  const e = model.estimate()!;
  t.ok(e.offPerMiB > 3 * e.onPerMiB, `off ${e.offPerMiB} vs on ${e.onPerMiB}`);
  t.end();
});

t.test('start/stop use an unref timer', (t) => {
  const acc = new CpuAccounting({ intervalMs: 1_000_000 });
  acc.start();
  acc.start();
  acc.stop();
  t.pass();
  t.end();
});
