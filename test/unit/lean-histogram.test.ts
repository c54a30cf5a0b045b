// LeanHistogram must expose exactly what prom-client's Histogram would for the
// same observations (it replaces it on the per-request path).
import t from 'tap';
import { Histogram, Registry } from 'prom-client';
import { LeanHistogram } from '../../proxy/admin/lean-histogram.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVED: Array<[string, number]> = [['a', 0.0005], ['a', 0.001], ['a', 0.05], ['b', 0.5], ['a', 7], ['b', 0.01], ['a', Number.NaN]];

t.test('same exposition as prom-client for the same observations', async (t) => {
  const theirs = new Registry();
  const ours = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'h', buckets: BUCKETS, labelNames: ['k'] as const, registers: [theirs] });
  const lean = new LeanHistogram('x_seconds', 'h', BUCKETS, ['k'] as const, [ours]);
  const children = { a: lean.child({ k: 'a' }), b: lean.child({ k: 'b' }) };
  for (const [k, v] of OBSERVED) {
    if (Number.isFinite(v)) h.observe({ k }, v);
    children[k as 'a' | 'b'].observe(v);
  }
  t.equal(await ours.metrics(), await theirs.metrics());
  t.same(await ours.getMetricsAsJSON(), await theirs.getMetricsAsJSON());
});

t.test('a child made twice for one label set shares its cell; reset zeroes it and children stay valid', async (t) => {
  const r = new Registry();
  const lean = new LeanHistogram('y_seconds', 'h', BUCKETS, ['k'] as const, [r]);
  const one = lean.child({ k: 'a' });
  const two = lean.child({ k: 'a' });
  one.observe(0.002);
  two.observe(0.002);
  t.match(await r.metrics(), /y_seconds_count\{k="a"\} 2/);
  r.resetMetrics();
  t.match(await r.metrics(), /y_seconds_count\{k="a"\} 0/);
  one.observe(2);
  t.match(await r.metrics(), /y_seconds_bucket\{le="1",k="a"\} 0\ny_seconds_bucket\{le="\+Inf",k="a"\} 1/);
});
