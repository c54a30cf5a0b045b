// The chart's monitoring objects: one monitor at a time with its scrape knobs, the PrometheusRule
// with the alerts docs/metrics.md documents, and the opt-in dashboard with a uid per release.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { CHART_DIR, REPO_ROOT } from './helpers/helm.js';
import { EXAMPLES_DIR, find, lint, render, validateManifest, type Manifest } from './helpers/render.js';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const metricsDoc = readFileSync(join(REPO_ROOT, 'docs/metrics.md'), 'utf8');

function rules(m: Manifest): Rule[] {
  return (m['spec'] as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
}
function endpoint(m: Manifest): Record<string, unknown> {
  const spec = m['spec'] as { endpoints?: Record<string, unknown>[]; podMetricsEndpoints?: Record<string, unknown>[] };
  const e = (spec.endpoints ?? spec.podMetricsEndpoints ?? [])[0];
  if (!e) throw new Error(`${m.kind} has no endpoint`);
  return e;
}

t.test('ServiceMonitor and PodMonitor together are refused (every pod scraped twice)', async (t) => {
  await t.rejects(render({ set: { 'metrics.serviceMonitor.enabled': 'true', 'metrics.podMonitor.enabled': 'true' } }), /both true: every pod would be scraped twice/);
});

t.test('the monitoring example enables exactly one monitor', async (t) => {
  const ms = await render({ valuesFiles: [join(EXAMPLES_DIR, 'monitoring-and-policies.yaml')] });
  t.equal(ms.filter((m) => m.kind === 'ServiceMonitor' || m.kind === 'PodMonitor').length, 1);
});

for (const kind of ['serviceMonitor', 'podMonitor'] as const) {
  t.test(`${kind}: interval, scrapeTimeout, relabelings and metricRelabelings reach the endpoint`, async (t) => {
    const relabelings = [{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node', action: 'replace' }];
    const metricRelabelings = [{ sourceLabels: ['__name__'], regex: 'ktls_sidecar_kernel_cipher_supported', action: 'drop' }];
    const ms = await render({
      set: { [`metrics.${kind}.enabled`]: 'true', [`metrics.${kind}.interval`]: '15s', [`metrics.${kind}.scrapeTimeout`]: '5s' },
      setJson: { [`metrics.${kind}.relabelings`]: relabelings, [`metrics.${kind}.metricRelabelings`]: metricRelabelings },
    });
    const m = find(ms, kind === 'serviceMonitor' ? 'ServiceMonitor' : 'PodMonitor');
    t.doesNotThrow(() => validateManifest(m));
    t.same(endpoint(m), { port: 'admin', path: '/metrics', interval: '15s', scrapeTimeout: '5s', relabelings, metricRelabelings });
    const bare = endpoint(find(await render({ set: { [`metrics.${kind}.enabled`]: 'true' } }), kind === 'serviceMonitor' ? 'ServiceMonitor' : 'PodMonitor'));
    t.same(bare, { port: 'admin', path: '/metrics', interval: '30s' }, 'unset knobs are left to Prometheus');
    const bad = await lint({ set: { [`metrics.${kind}.scrapeTimeout`]: 'ten' } });
    t.not(bad.code, 0);
    t.match(bad.output, new RegExp(`metrics/${kind}/scrapeTimeout`));
  });
}

t.test('the PrometheusRule is off by default and valid when on', async (t) => {
  t.notOk((await render()).some((m) => m.kind === 'PrometheusRule'));
  const pr = find(await render({ set: { 'metrics.prometheusRule.enabled': 'true', 'metrics.prometheusRule.labels.release': 'kps' } }), 'PrometheusRule');
  t.doesNotThrow(() => validateManifest(pr));
  t.equal(pr.metadata.labels?.['release'], 'kps', 'labels for the Prometheus ruleSelector');
  for (const r of rules(pr)) {
    t.ok(r.alert, 'an alert');
    t.match(r.labels?.['severity'], /^(warning|info|critical)$/, `${r.alert} has a severity`);
    t.ok(r.annotations?.['summary'], `${r.alert} has a summary`);
  }
});

/** The rule groups of docs/metrics.md's "Alerts" section (a PrometheusRule spec). */
function documentedGroups(): { name: string; rules: Rule[] }[] {
  const block = /## Alerts\n[\s\S]*?```yaml\n([\s\S]*?)```/.exec(metricsDoc)?.[1];
  if (!block) throw new Error('docs/metrics.md has no rule block in its "Alerts" section');
  return (parse(block) as { groups: { name: string; rules: Rule[] }[] }).groups;
}

t.test('files/alerts.yaml is the rule block of docs/metrics.md (copy it over after editing the docs)', (t) => {
  const file = parse(readFileSync(join(CHART_DIR, 'files/alerts.yaml'), 'utf8')) as { groups: unknown };
  t.same(file.groups, documentedGroups());
  t.end();
});

t.test('the PrometheusRule holds every documented alert, each selector scoped to the release namespace', async (t) => {
  const pr = find(await render({ set: { 'metrics.prometheusRule.enabled': 'true' } }), 'PrometheusRule');
  const rendered = rules(pr);
  const documented = documentedGroups().flatMap((g) => g.rules);
  t.ok(documented.length >= 4, `${documented.length} documented alerts`);
  t.same(rendered.map((r) => r.alert), documented.map((r) => r.alert));
  for (const r of rendered) {
    const selectors = [...r.expr.matchAll(/\bktls_sidecar_[a-z0-9_]+(\{[^}]*\})?/g)];
    t.ok(selectors.length > 0, `${r.alert} reads a ktls_sidecar metric`);
    for (const s of selectors) t.match(s[1] ?? '', /^\{namespace="prod"(, |\})/, `${r.alert}: ${s[0]} is scoped`);
    // Without the injected matcher, the rule is the documented one, field for field.
    const unscoped = r.expr.replaceAll('{namespace="prod", ', '{').replaceAll('{namespace="prod"}', '');
    t.same({ ...r, expr: unscoped }, documented.find((d) => d.alert === r.alert), `${r.alert} is the documented rule`);
  }
  const documentedNames = new Set([...metricsDoc.matchAll(/\bktls_sidecar_[a-z0-9_]+/g)].map((m) => m[0]));
  for (const r of rendered) {
    for (const m of r.expr.matchAll(/\bktls_sidecar_[a-z0-9_]+/g)) t.ok(documentedNames.has(m[0]), `${m[0]} is documented in docs/metrics.md`);
  }
});

t.test('PrometheusRule knobs: matchers and extra rules', async (t) => {
  const pr = find(
    await render({
      set: { 'metrics.prometheusRule.enabled': 'true', 'metrics.prometheusRule.matchers': 'job="billing"' },
      setJson: { 'metrics.prometheusRule.additionalRules': [{ alert: 'Mine', expr: 'up == 0', for: '5m' }] },
    }),
    'PrometheusRule',
  );
  t.doesNotThrow(() => validateManifest(pr));
  const rs = rules(pr);
  t.ok(rs.filter((r) => r.alert !== 'Mine').every((r) => r.expr.includes('job="billing"') && !r.expr.includes('namespace="prod"')));
  t.ok(rs.some((r) => r.alert === 'Mine' && r.expr === 'up == 0'), 'the extra rule as given');
  const bad = await lint({ set: { 'metrics.prometheusRule.matchers': 'job="a"}' } });
  t.not(bad.code, 0, 'a brace would break every expression');
  t.match(bad.output, /prometheusRule\/matchers/);
});

t.test('the dashboard is opt-in, with a uid and title per release', async (t) => {
  t.notOk((await render()).some((m) => m.metadata.name.endsWith('-dashboard')), 'off by default');
  const file = JSON.parse(readFileSync(join(CHART_DIR, 'files/dashboard.json'), 'utf8')) as Record<string, unknown>;
  const get = async (release: string, namespace: string, set: Record<string, string> = {}): Promise<Record<string, unknown>> => {
    const cm = find(await render({ release, namespace, set: { 'dashboard.enabled': 'true', ...set } }), 'ConfigMap', '-dashboard');
    const data = cm['data'] as Record<string, string>;
    t.same(Object.keys(data), [`${release}-ktls-sidecar.json`], 'one file, named for the release (the Grafana sidecar writes all keys into one folder)');
    t.equal(cm.metadata.labels?.['grafana_dashboard'], '1');
    return JSON.parse(Object.values(data)[0] ?? 'null') as Record<string, unknown>;
  };
  const a = await get('shop', 'prod');
  const b = await get('shop', 'staging');
  const c = await get('billing', 'prod');
  t.match(a['uid'], /^[A-Za-z0-9_-]{1,40}$/);
  t.not(a['uid'], b['uid'], 'same release name in another namespace');
  t.not(a['uid'], c['uid'], 'another release in the same namespace');
  t.equal(a['uid'], (await get('shop', 'prod'))['uid'], 'stable across renders (upgrades keep the dashboard)');
  t.equal(a['title'], 'ktls-sidecar (prod/shop)');
  t.same({ ...a, uid: file['uid'], title: file['title'] }, file, 'everything else is files/dashboard.json as is');
  const set = await get('shop', 'prod', { 'dashboard.uid': 'tls-edge', 'dashboard.title': 'Edge TLS' });
  t.equal(set['uid'], 'tls-edge');
  t.equal(set['title'], 'Edge TLS');
  const bad = await lint({ set: { 'dashboard.uid': 'x'.repeat(41) } });
  t.not(bad.code, 0, 'a uid Grafana would refuse (over 40 characters)');
  t.match(bad.output, /dashboard\/uid/);
});

t.test('the monitoring example values parse and name one monitor only', (t) => {
  const v = parse(readFileSync(join(EXAMPLES_DIR, 'monitoring-and-policies.yaml'), 'utf8')) as { metrics: Record<string, { enabled?: boolean }> };
  t.equal([v.metrics['serviceMonitor']?.enabled, v.metrics['podMonitor']?.enabled].filter(Boolean).length, 1);
  t.end();
});
