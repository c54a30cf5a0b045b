import t from 'tap';
import { KtlsConnectionRegistry, attachDrainToFlag } from '../../proxy/ktls/drain.js';
import type { KtlsDrainTarget } from '../../proxy/ktls/drain.js';
import { createKtlsFlag } from '../../proxy/ktls/flag.js';
import { EventEmitter } from 'node:events';

function target(protocol: 'http1' | 'h2' | 'tcp', log: string[], name: string, opts: { closeOnDrain?: boolean; remove?: () => void; throws?: boolean } = {}) {
  const t: KtlsDrainTarget & { closed: boolean } = {
    protocol,
    closed: false,
    requestDrain() {
      log.push(`drain ${name}`);
      if (opts.throws) throw new Error('front bug');
      if (opts.closeOnDrain) t.close();
    },
    close() {
      if (t.closed) return;
      t.closed = true;
      log.push(`close ${name}`);
      opts.remove?.();
    },
  };
  return t;
}

// The registry's timer is unref()'d (a drain must not hold the process open),
// so a test awaiting it keeps the loop alive itself.
function holdLoop(t: { teardown(fn: () => void): void }): void {
  const h = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(h));
}

const opts = (drainOnDisable: 'close' | 'keep', drainTimeout = 5) => ({ drainOnDisable, drainTimeout });

t.test('flag off: http fronts drain, leftovers are closed at the timeout', async (t) => {
  holdLoop(t);
  const reg = new KtlsConnectionRegistry();
  const flag = createKtlsFlag({ enabled: true });
  const log: string[] = [];
  const a = target('http1', log, 'a');
  const removeA = reg.add(a);
  const b = target('h2', log, 'b', { closeOnDrain: true, remove: () => removeB() });
  const removeB = reg.add(b);
  const forced = new Promise<KtlsDrainTarget>((resolve) => {
    attachDrainToFlag(flag, reg, () => opts('keep'), { forcedClose: resolve });
  });
  flag.set(false, 'admin');
  t.strictSame(log, ['drain a', 'drain b', 'close b']);
  t.equal(await forced, a, 'a was still open at the timeout');
  t.ok(a.closed);
  removeA();
  t.equal(reg.size, 0);
});

t.test('tcp: keep leaves it alone, close drains it', (t) => {
  for (const mode of ['keep', 'close'] as const) {
    const reg = new KtlsConnectionRegistry();
    const log: string[] = [];
    const actions: string[] = [];
    reg.add(target('tcp', log, 'c'));
    const s = reg.drainAll(opts(mode, 60_000), { ktlsDrained: (a) => actions.push(a) });
    if (mode === 'keep') {
      t.strictSame(s, { draining: 0, kept: 1 });
      t.strictSame(log, []);
      t.strictSame(actions, ['kept']);
    } else {
      t.strictSame(s, { draining: 1, kept: 0 });
      t.strictSame(log, ['drain c']);
      t.strictSame(actions, ['closed']);
    }
    reg.cancelDrain();
  }
  t.end();
});

t.test('flag back on before the timeout: no forced close', async (t) => {
  holdLoop(t);
  const reg = new KtlsConnectionRegistry();
  const flag = createKtlsFlag({ enabled: true });
  const log: string[] = [];
  const a = target('http1', log, 'a');
  reg.add(a);
  let forced = 0;
  attachDrainToFlag(flag, reg, () => opts('close', 20), { forcedClose: () => forced++ });
  flag.set(false, 'admin');
  flag.set(true, 'admin');
  t.equal(reg.drainingCount, 0);
  // A later drain still works (proves the timer path is live, and nothing fired for the cancelled one).
  const done = new Promise<void>((resolve) => reg.drainAll(opts('close', 1), { forcedClose: () => resolve() }));
  await done;
  t.equal(forced, 0);
  t.strictSame(log, ['drain a', 'drain a', 'close a']);
});

t.test('a front whose hook throws is closed instead', (t) => {
  const reg = new KtlsConnectionRegistry();
  const log: string[] = [];
  const errs: unknown[] = [];
  reg.add(target('http1', log, 'x', { throws: true }));
  reg.drainAll(opts('keep', 60_000), { hookFailed: (e) => errs.push(e) });
  t.strictSame(log, ['drain x', 'close x']);
  t.equal(errs.length, 1);
  reg.cancelDrain();
  t.end();
});

t.test('track() unregisters on close', (t) => {
  const reg = new KtlsConnectionRegistry();
  const ee = new EventEmitter();
  reg.track(ee, target('tcp', [], 'y'));
  t.equal(reg.size, 1);
  ee.emit('close');
  t.equal(reg.size, 0);
  t.end();
});

t.test('only on→off drains', (t) => {
  const reg = new KtlsConnectionRegistry();
  const flag = createKtlsFlag({ enabled: false });
  const log: string[] = [];
  reg.add(target('http1', log, 'z'));
  attachDrainToFlag(flag, reg, () => opts('close', 60_000));
  flag.set(true, 'sighup');
  t.strictSame(log, []);
  flag.set(false, 'sighup');
  t.strictSame(log, ['drain z']);
  reg.cancelDrain();
  t.end();
});
