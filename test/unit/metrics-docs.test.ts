// docs/metrics.md, proxy/admin/metrics.ts and proxy/vocabulary.ts agree: every metric and every
// closed label value is documented, and every documented metric exists.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as m from '../../proxy/admin/metrics.js';
import * as v from '../../proxy/vocabulary.js';
import { KTLS_DIRECTIONS } from '../../native/crypto-info.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const doc = readFileSync(join(root, 'docs/metrics.md'), 'utf8');

async function declaredMetrics(): Promise<{ name: string; type: string; labels: string[] }[]> {
  const metrics = m.createMetrics({ defaultMetrics: false });
  // The primary of workers: N adds its own series to the same registry.
  m.createPrimaryMetrics(metrics.registry);
  const json = await metrics.registry.getMetricsAsJSON();
  return json.map((x) => {
    const names = (x as unknown as { labelNames?: string[] }).labelNames;
    return { name: x.name, type: String(x.type), labels: names ?? [] };
  });
}

t.test('every declared metric has a row with its type', async (t) => {
  for (const metric of await declaredMetrics()) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${metric.name}\` |`));
    t.ok(row, `${metric.name} documented`);
    t.match(row ?? '', `| ${metric.type} |`, `${metric.name} type ${metric.type}`);
  }
});

t.test('every documented metric exists', async (t) => {
  const declared = new Set((await declaredMetrics()).map((x) => x.name));
  const documented = [...doc.matchAll(/^\| `(ktls_sidecar_[a-z0-9_]+)` \| (counter|gauge|histogram) \|/gm)].map((x) => x[1] ?? '');
  t.ok(documented.length >= 20);
  for (const name of documented) t.ok(declared.has(name), `${name} exists`);
});

t.test('every label value of every closed set is documented', (t) => {
  // Every closed set of proxy/vocabulary.ts (the one definition), plus the kernel's directions.
  const sets: Record<string, readonly string[]> = { KTLS_DIRECTIONS };
  // Not label values: the decision's modes, config settings, the close line's engine_fallback (docs/ktls.md, docs/config.md).
  const notLabels = new Set(['KTLS_MODES', 'KTLS_DIRECTION_SETTINGS', 'PROXY_PROTOCOL_MODES', 'ENGINE_FALLBACK_REASONS']);
  for (const [name, value] of Object.entries(v)) if (Array.isArray(value) && !notLabels.has(name)) sets[name] = value as readonly string[];
  t.ok(Object.keys(sets).length >= 20);
  for (const [set, values] of Object.entries(sets)) {
    for (const v of values) t.match(doc, `\`${v}\``, `${set}: ${v}`);
  }
  t.end();
});

t.test('each ktls_reason has its own row in the reasons table', (t) => {
  for (const r of v.KTLS_REASONS) t.match(doc, new RegExp(`^\\| \`${r}\` \\| (on|off|on/off) \\|`, 'm'), r);
  t.end();
});

t.test('the PromQL for the bytes share and the activation ratio uses real names', (t) => {
  t.match(doc, 'sum(rate(ktls_sidecar_bytes_sent_total{ktls="on"}[5m]))');
  t.match(doc, 'sum by (protocol, cipher) (rate(ktls_sidecar_connections_opened_total{ktls="on"}[5m]))');
  t.end();
});
