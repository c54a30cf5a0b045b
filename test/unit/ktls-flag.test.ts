// The runtime kTLS flag: state, subscribers, logging of every flip with its
// source, and the ktls_sidecar_ktls_enabled gauge.
import t from 'tap';
import { createKtlsFlag, type KtlsFlagChange } from '../../proxy/ktls/flag.js';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { captureLog } from '../helpers/log-capture.js';

async function gauge(metrics: ReturnType<typeof createMetrics>): Promise<number> {
  const m = /^ktls_sidecar_ktls_enabled (\d+)$/m.exec(await metrics.registry.metrics());
  return Number(m?.[1]);
}

t.test('starts with the configured value and source startup', (t) => {
  const flag = createKtlsFlag({ enabled: true, now: () => new Date('2026-01-01T00:00:00Z') });
  t.equal(flag.enabled, true);
  t.same(flag.state(), { enabled: true, source: 'startup', changedAt: '2026-01-01T00:00:00.000Z', changes: 0 });
  t.end();
});

t.test('a change notifies every subscriber with previous and current state', (t) => {
  const flag = createKtlsFlag({ enabled: true });
  const seen: KtlsFlagChange[] = [];
  const seen2: boolean[] = [];
  flag.subscribe((c) => seen.push(c));
  flag.subscribe((c) => seen2.push(c.current.enabled));
  const r = flag.set(false, 'admin');
  t.equal(r.changed, true);
  t.equal(flag.enabled, false);
  t.equal(seen.length, 1);
  t.equal(seen[0]?.previous.enabled, true);
  t.equal(seen[0]?.current.enabled, false);
  t.equal(seen[0]?.current.source, 'admin');
  t.equal(seen[0]?.current.changes, 1);
  t.same(seen2, [false]);
  t.end();
});

t.test('setting the current value is not a change', (t) => {
  const flag = createKtlsFlag({ enabled: false });
  let calls = 0;
  flag.subscribe(() => calls++);
  t.equal(flag.set(false, 'sighup').changed, false);
  t.equal(calls, 0);
  t.equal(flag.state().source, 'startup');
  t.end();
});

t.test('unsubscribe stops notifications', (t) => {
  const flag = createKtlsFlag({ enabled: true });
  let calls = 0;
  const off = flag.subscribe(() => calls++);
  flag.set(false, 'admin');
  off();
  flag.set(true, 'admin');
  t.equal(calls, 1);
  t.end();
});

t.test('a throwing subscriber does not stop the others or the flip', (t) => {
  const { lines, logger } = captureLog();
  const flag = createKtlsFlag({ enabled: true, logger });
  const order: string[] = [];
  flag.subscribe(() => {
    order.push('a');
    throw new Error('boom');
  });
  flag.subscribe(() => order.push('b'));
  flag.set(false, 'config_watch');
  t.same(order, ['a', 'b']);
  t.equal(flag.enabled, false);
  t.ok(lines.some((l) => l['msg'] === 'ktls flag subscriber failed' && l['level'] === 'error'));
  t.end();
});

t.test('every flip is logged with its source', (t) => {
  const { lines, logger } = captureLog();
  const flag = createKtlsFlag({ enabled: true, logger });
  flag.set(false, 'admin');
  flag.set(true, 'sighup');
  flag.set(false, 'config_watch');
  const flips = lines.filter((l) => typeof l['msg'] === 'string' && /^ktls flag (enabled|disabled) by/.test(l['msg']));
  t.same(
    flips.map((l) => [l['ktls_enabled'], l['source']]),
    [
      [false, 'admin'],
      [true, 'sighup'],
      [false, 'config_watch'],
    ],
  );
  t.end();
});

t.test('the gauge follows the flag and changes are counted by source', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  const flag = createKtlsFlag({ enabled: true, metrics });
  t.equal(await gauge(metrics), 1);
  flag.set(false, 'admin');
  t.equal(await gauge(metrics), 0);
  flag.set(true, 'sighup');
  t.equal(await gauge(metrics), 1);
  t.match(await metrics.registry.metrics(), /^ktls_sidecar_ktls_flag_changes_total\{source="admin"\} 1$/m);
});
