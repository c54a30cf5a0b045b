// The Grafana dashboard: generated from helpers/dashboard.ts, shipped in a ConfigMap the Grafana
// sidecar picks up, laid out without overlaps, and querying only metrics docs/metrics.md documents.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildDashboard } from './helpers/dashboard.js';
import { CHART_DIR, REPO_ROOT } from './helpers/helm.js';
import { find, render } from './helpers/render.js';
import { createMetrics } from '../../proxy/admin/metrics.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string }[];
}
interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; query?: unknown }[] };
  annotations: { list: { expr?: string }[] };
}

const file = join(CHART_DIR, 'files/dashboard.json');
const dashboard = JSON.parse(readFileSync(file, 'utf8')) as Dashboard;

/** Every ktls_sidecar_* metric family an expression reads (histogram series mapped to their family). */
function metricsOf(expr: string): string[] {
  return [...expr.matchAll(/\bktls_sidecar_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

function allExprs(d: Dashboard): string[] {
  const out: string[] = [];
  for (const p of d.panels) for (const tg of p.targets ?? []) out.push(tg.expr);
  for (const a of d.annotations.list) if (a.expr) out.push(a.expr);
  for (const v of d.templating.list) if (v.query) out.push(JSON.stringify(v.query));
  return out;
}

t.test('files/dashboard.json is the output of helpers/dashboard.ts (regenerate after edits)', (t) => {
  t.same(dashboard, buildDashboard());
  t.end();
});

t.test('the dashboard ships in a ConfigMap labelled grafana_dashboard: "1"', async (t) => {
  const cm = find(await render(), 'ConfigMap', '-dashboard');
  t.equal(cm.metadata.labels?.['grafana_dashboard'], '1');
  const data = cm['data'] as Record<string, string>;
  t.same(JSON.parse(data['ktls-sidecar.json'] ?? 'null'), dashboard);
  const off = await render({ set: { 'dashboard.enabled': 'false' } });
  t.notOk(off.some((m) => m.metadata.name.endsWith('-dashboard')));
});

t.test('panel ids are unique and panels do not overlap', (t) => {
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length);
  const cells = new Map<string, string>();
  for (const p of dashboard.panels) {
    const { h, w, x, y } = p.gridPos;
    t.ok(x >= 0 && w > 0 && x + w <= 24, `${p.title} fits the 24-column grid`);
    for (let r = y; r < y + h; r++) {
      for (let c = x; c < x + w; c++) {
        const other = cells.get(`${r},${c}`);
        if (other) t.fail(`${p.title} overlaps ${other}`);
        cells.set(`${r},${c}`, p.title);
      }
    }
  }
  t.end();
});

t.test('the dashboard covers what an operator needs during the kTLS rollout', (t) => {
  const titles = dashboard.panels.map((p) => p.title);
  for (const want of [
    /bytes via ktls/i,
    /activation ratio by protocol \/ cipher/i,
    /ktls reason/i,
    /error/i,
    /tls_stat/,
    /cpu per byte/i,
    /handshake rate/i,
    /request latency/i,
  ]) {
    t.ok(titles.some((x) => want.test(x)), `a panel matches ${want}`);
  }
  t.end();
});

t.test('every metric the dashboard queries is documented in docs/metrics.md', (t) => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/metrics.md'), 'utf8');
  // Names appear in tables (`name`) and in the probe list (`name{labels}`): take every mention.
  const documented = new Set([...doc.matchAll(/\bktls_sidecar_[a-z0-9_]+/g)].map((m) => m[0]));
  const used = new Set(allExprs(dashboard).flatMap(metricsOf));
  t.ok(used.size > 10, `${used.size} metrics used`);
  const missing = [...used].filter((m) => !documented.has(m)).sort();
  t.same(missing, [], 'metrics queried by the dashboard but absent from docs/metrics.md');
  t.end();
});

t.test('every label the dashboard groups or filters by exists on that metric in the sidecar', (t) => {
  // The metrics module's own registry (no default process metrics: they carry no labels we use).
  const { registry } = createMetrics({ defaultMetrics: false });
  const ignored = new Set(['namespace', 'pod', 'le']);
  let checked = 0;
  for (const expr of allExprs(dashboard)) {
    // `by (a, b) (rate(metric{x="1", ...}[...]))` and `by (a) (metric{...})`
    for (const m of expr.matchAll(/by \(([^)]*)\) \((?:rate\()?(ktls_sidecar_[a-z0-9_]+)\{([^}]*)\}/g)) {
      const family = (m[2] ?? '').replace(/_bucket$/, '');
      const metric = registry.getSingleMetric(family) as { labelNames?: readonly string[] } | undefined;
      if (!metric) continue; // registered elsewhere (the kernel probe gauges); the docs test covers the name
      const have = new Set(metric.labelNames ?? []);
      const grouped = (m[1] ?? '').split(',').map((x) => x.trim()).filter(Boolean);
      const filtered = [...(m[3] ?? '').matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1] ?? '');
      for (const label of [...grouped, ...filtered]) {
        if (ignored.has(label)) continue;
        checked++;
        if (!have.has(label)) t.fail(`${family} has no label ${label} (has: ${[...have].join(', ')})`);
      }
    }
  }
  t.ok(checked > 20, `${checked} label uses checked`);
  t.end();
});
