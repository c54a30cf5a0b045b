import t from 'tap';
import { CpuAccounting, splitInterval } from '../../proxy/observe/cpu-accounting.js';
import type { OpenedConnection } from '../../proxy/observe/events.js';

const MIB = 1024 * 1024;

t.test('split always adds up to the measured delta', (t) => {
  for (const [cpu, on, off] of [[1, 100 * MIB, 50 * MIB], [0.05, 100 * MIB, 50 * MIB], [0.3, 0, 10 * MIB], [0.3, 10 * MIB, 0], [0.2, 0, 0]] as const) {
    const s = splitInterval(cpu, on, off);
    t.ok(Math.abs(s.on + s.off + s.none - cpu) < 1e-12, `${cpu} ${on} ${off}`);
    t.ok(s.on >= 0 && s.off >= 0 && s.none >= 0);
  }
  t.end();
});

t.test('no bytes: the interval is idle', (t) => {
  t.strictSame(splitInterval(0.2, 0, 0), { on: 0, off: 0, none: 0.2 });
  t.end();
});

t.test('the split is in proportion to bytes', (t) => {
  const s = splitInterval(1, 3 * MIB, 1 * MIB);
  t.ok(Math.abs(s.on - 0.75) < 1e-12 && Math.abs(s.off - 0.25) < 1e-12);
  t.equal(s.none, 0);
  t.strictSame(splitInterval(0.4, 0, 5), { on: 0, off: 0.4, none: 0 });
  t.end();
});

t.test('a negative delta (clock noise) books nothing', (t) => {
  t.strictSame(splitInterval(-0.1, 1, 1), { on: 0, off: 0, none: 0 });
  t.end();
});

t.test('CpuAccounting: cpuUsage deltas and the bytes of observed connections per interval', (t) => {
  let user = 0;
  let system = 0;
  const totals = { on: 0, off: 0, none: 0 };
  const acc = new CpuAccounting({
    cpuUsage: () => ({ user, system }),
    onSplit: (s) => {
      totals.on += s.on;
      totals.off += s.off;
      totals.none += s.none;
    },
  });
  const conn = (ktls: 'on' | 'off') => {
    const bytes = { bytesIn: 0, bytesOut: 0 };
    return { bytes, span: acc.opened({ labels: { ktls }, bytes } as unknown as OpenedConnection) };
  };
  const kernel = conn('on');
  const userspace = conn('off');
  user += 300_000;
  system += 100_000; // 0.4 s
  kernel.bytes.bytesIn = 2 * MIB; // rx and tx both count
  kernel.bytes.bytesOut = 1 * MIB;
  userspace.bytes.bytesOut = 1 * MIB;
  const s1 = acc.sample();
  t.ok(Math.abs(s1.on - 0.3) < 1e-12 && Math.abs(s1.off - 0.1) < 1e-12 && s1.none === 0);
  user += 200_000; // idle interval: only what moved since the last sample counts
  const s2 = acc.sample();
  t.strictSame(s2, { on: 0, off: 0, none: 0.2 });
  t.ok(Math.abs(totals.on + totals.off + totals.none - 0.6) < 1e-12);
  user += 100_000; // a connection that closed in the interval still gets its last bytes' share
  userspace.bytes.bytesOut = 2 * MIB;
  userspace.span.closed?.({ reason: 'client_close', error: undefined, bytesIn: 0, bytesOut: 2 * MIB, closeInfo: {} });
  t.strictSame(acc.sample(), { on: 0, off: 0.1, none: 0 });
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
