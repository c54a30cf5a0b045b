// docs/metrics.md, proxy/admin/metrics.ts and proxy/vocabulary.ts agree: every metric and every
// closed label value is documented, and every documented metric exists; the alerts are a valid
// PrometheusRule that reads only metrics that exist.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as m from '../../proxy/admin/metrics.js';
import * as v from '../../proxy/vocabulary.js';
import { KTLS_DIRECTIONS } from '../../native/crypto-info.js';
import { parse as parseYaml } from 'yaml';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { registerProbeMetrics } from '../../proxy/admin/probe-metrics.js';
import { probeKernel } from '../../proxy/ktls/probe.js';

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

/** Every metric family the sidecar can export: the adapter's, the primary's, the kernel probe's, and the defaults. */
async function allFamilies(): Promise<Map<string, string>> {
  const metrics = m.createMetrics();
  m.createPrimaryMetrics(metrics.registry);
  registerProbeMetrics(metrics.registry, await probeKernel({ skipNicOffload: true }), { tlsStatPath: '/nonexistent/tls_stat' });
  const json = await metrics.registry.getMetricsAsJSON();
  return new Map(json.map((x) => [x.name, String(x.type)]));
}

/** A series name → its family (histogram series end in _bucket, _sum, _count). */
function family(name: string, families: Map<string, string>): string {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return families.get(base) === 'histogram' ? base : name;
}

t.test('every ktls_sidecar_ name on the page exists (no stale or misspelt name anywhere, prose included)', async (t) => {
  const families = await allFamilies();
  const mentioned = new Set([...doc.matchAll(/\bktls_sidecar_[a-z0-9_]+/g)].map((x) => x[0]));
  t.ok(mentioned.size >= 30, `${mentioned.size} names mentioned`);
  for (const name of mentioned) t.ok(families.has(family(name, families)), `${name} exists`);
});

t.test('the kernel probe metrics are documented with their type', async (t) => {
  const declared = new Set((await declaredMetrics()).map((x) => x.name));
  const families = await allFamilies();
  const probe = [...families].filter(([name]) => name.startsWith('ktls_sidecar_') && !declared.has(name));
  t.ok(probe.length >= 5, `${probe.length} probe metrics`);
  for (const [name, type] of probe) t.match(doc, new RegExp(`^- \`${name}(\\{[a-z_,]+\\})?\` \\(${type}\\)`, 'm'), `${name} (${type})`);
});

t.test('the default metrics keep their standard names; every one in the table exists with its type', async (t) => {
  const families = await allFamilies();
  const rows = [...doc.matchAll(/^\| `((?:process|nodejs)_[a-z0-9_]+)` \| (counter|gauge|histogram) \|/gm)];
  t.ok(rows.length >= 8, `${rows.length} default metrics documented`);
  for (const [, name = '', type] of rows) t.equal(families.get(name), type, `${name} ${type}`);
  t.notOk([...families.keys()].some((f) => /^ktls_sidecar_(?!process_cpu_seconds_by_mode_total$)(process|nodejs)_/.test(f)), 'none under our prefix');
});

interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: string };
  annotations: { summary: string };
}

/** The rule group of the "## Alerts" section: the YAML block that the chart's PrometheusRule carries. */
function alertRules(): { spec: unknown; rules: AlertRule[] } {
  const section = doc.slice(doc.indexOf('\n## Alerts\n'));
  const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const spec = parseYaml(block) as { groups: { name: string; rules: AlertRule[] }[] };
  return { spec, rules: spec.groups.flatMap((g) => g.rules) };
}

t.test('the alerts are a valid PrometheusRule spec: name, expr, for, severity and summary each', (t) => {
  const { spec, rules } = alertRules();
  t.doesNotThrow(() => new PrometheusRule({ metadata: { name: 'ktls-sidecar' }, spec } as never).validate(), 'validates as PrometheusRule');
  t.ok(rules.length >= 8, `${rules.length} alerts`);
  for (const r of rules) {
    t.match(r.alert, /^KtlsSidecar[A-Za-z]+$/, `${r.alert}: name`);
    t.ok(r.expr.length > 0, `${r.alert}: expr`);
    t.match(r.for, /^\d+[smh]$/, `${r.alert}: for`);
    t.ok(['info', 'warning', 'critical'].includes(r.labels.severity), `${r.alert}: severity ${r.labels.severity}`);
    t.ok(r.annotations.summary.length > 0, `${r.alert}: summary`);
  }
  t.equal(new Set(rules.map((r) => r.alert)).size, rules.length, 'alert names are unique');
  t.end();
});

t.test('the alerts table and the rules list the same alerts with the same severity', (t) => {
  const { rules } = alertRules();
  const table = [...doc.matchAll(/^\| `(KtlsSidecar[A-Za-z]+)` \| (info|warning|critical) \|/gm)].map((x) => `${x[1]} ${x[2]}`);
  t.same(table.sort(), rules.map((r) => `${r.alert} ${r.labels.severity}`).sort());
  t.end();
});

t.test('every metric an alert reads exists, and the default ones are documented', async (t) => {
  const families = await allFamilies();
  const { rules } = alertRules();
  for (const r of rules) {
    // The sidecar's own names and the process/Node.js defaults; PromQL functions and labels never start so.
    const names = [...r.expr.matchAll(/\b((?:ktls_sidecar|process|nodejs)_[a-z0-9_]+)\b/g)].map((x) => x[1] ?? '');
    t.ok(names.length > 0, `${r.alert} reads a metric`);
    for (const name of names) {
      t.ok(families.has(family(name, families)), `${r.alert}: ${name} exists`);
      t.match(doc, `\`${name}`, `${r.alert}: ${name} documented`);
    }
    // A default metric has a standard name an app in the pod may share: the alert must select the sidecar's target.
    if (names.some((n) => !n.startsWith('ktls_sidecar_'))) t.match(r.expr, 'and on (job, instance) ktls_sidecar_build_info', `${r.alert}: scoped to the sidecar`);
  }
});
