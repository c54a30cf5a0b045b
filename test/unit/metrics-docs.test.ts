// docs/metrics.md and proxy/admin/metrics.ts agree: every metric and every
// closed label value is documented, and every documented metric exists.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as m from '../../proxy/admin/metrics.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const doc = readFileSync(join(root, 'docs/metrics.md'), 'utf8');

async function declaredMetrics(): Promise<{ name: string; type: string; labels: string[] }[]> {
  const metrics = m.createMetrics({ defaultMetrics: false });
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
  const sets: Record<string, readonly string[]> = {
    KTLS_REASONS: m.KTLS_REASONS,
    KTLS_STATES: m.KTLS_STATES,
    KTLS_DIRECTIONS: m.KTLS_DIRECTIONS,
    TLS_VERSIONS: m.TLS_VERSIONS,
    CONNECTION_PROTOCOLS: m.CONNECTION_PROTOCOLS,
    HTTP_PROTOCOLS: m.HTTP_PROTOCOLS,
    STATUS_CLASSES: m.STATUS_CLASSES,
    REJECT_REASONS: m.REJECT_REASONS,
    HANDSHAKE_FAILURE_REASONS: m.HANDSHAKE_FAILURE_REASONS,
    UPSTREAM_ERROR_REASONS: m.UPSTREAM_ERROR_REASONS,
    CLOSE_REASONS: m.CLOSE_REASONS,
    RESULTS: m.RESULTS,
    RELOAD_TRIGGERS: m.RELOAD_TRIGGERS,
    FLAG_SOURCES: m.FLAG_SOURCES,
    ADMIN_REFUSAL_REASONS: m.ADMIN_REFUSAL_REASONS,
    INTERNAL_ERROR_KINDS: m.INTERNAL_ERROR_KINDS,
    KEY_UPDATE_RESULTS: m.KEY_UPDATE_RESULTS,
    DRAIN_ACTIONS: m.DRAIN_ACTIONS,
    KTLS_ERROR_STAGES: m.KTLS_ERROR_STAGES,
    OFFLOAD_RESULTS: m.OFFLOAD_RESULTS,
    OFFLOAD_DIRECTIONS: m.OFFLOAD_DIRECTIONS,
    OFFLOAD_KINDS: m.OFFLOAD_KINDS,
    CPU_MODES: m.CPU_MODES,
  };
  for (const [set, values] of Object.entries(sets)) {
    for (const v of values) t.match(doc, `\`${v}\``, `${set}: ${v}`);
  }
  t.end();
});

t.test('each ktls_reason has its own row in the reasons table', (t) => {
  for (const r of m.KTLS_REASONS) t.match(doc, new RegExp(`^\\| \`${r}\` \\| (on|off|on/off) \\|`, 'm'), r);
  t.end();
});

t.test('the PromQL for the bytes share and the activation ratio uses real names', (t) => {
  t.match(doc, 'sum(rate(ktls_sidecar_bytes_sent_total{ktls="on"}[5m]))');
  t.match(doc, 'sum by (protocol, cipher) (rate(ktls_sidecar_connections_opened_total{ktls="on"}[5m]))');
  t.end();
});
