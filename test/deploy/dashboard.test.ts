// The Grafana dashboard: generated from helpers/dashboard.ts, shipped in a ConfigMap the Grafana
// sidecar picks up, laid out without overlaps, and querying only metrics the sidecar exports and
// docs/metrics.md documents, with labels those metrics have.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildDashboard } from './helpers/dashboard.js';
import { CHART_DIR, REPO_ROOT } from './helpers/helm.js';
import { find, render } from './helpers/render.js';
import { createMetrics, createPrimaryMetrics } from '../../proxy/admin/metrics.js';
import { registerProbeMetrics } from '../../proxy/admin/probe-metrics.js';
import { probeKernel } from '../../proxy/ktls/probe.js';

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

/** The sidecar's own names and prom-client's process/Node.js defaults; no PromQL function or label starts so. */
const METRIC_NAME = /\b(?:ktls_sidecar|process|nodejs)_[a-z0-9_]+/g;

/** Every metric family an expression reads (histogram series mapped to their family). */
function metricsOf(expr: string): string[] {
  return [...expr.matchAll(METRIC_NAME)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

/** Every family the sidecar exports: the adapter's (defaults included), the primary's and the kernel probe's. */
async function exported(): Promise<Map<string, { labelNames?: readonly string[] }>> {
  const { registry } = createMetrics();
  createPrimaryMetrics(registry);
  registerProbeMetrics(registry, await probeKernel({ skipNicOffload: true }), { tlsStatPath: '/nonexistent/tls_stat' });
  return new Map(registry.getMetricsAsArray().map((m) => [(m as unknown as { name: string }).name, m as { labelNames?: readonly string[] }]));
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
  const cm = find(await render({ set: { 'dashboard.enabled': 'true' } }), 'ConfigMap', '-dashboard');
  t.equal(cm.metadata.labels?.['grafana_dashboard'], '1');
  const data = Object.entries(cm['data'] as Record<string, string>);
  t.equal(data.length, 1, 'one dashboard');
  t.match(data[0]?.[0] ?? '', /\.json$/, 'a file name the Grafana sidecar loads');
  const shipped = JSON.parse(data[0]?.[1] ?? 'null') as Dashboard & { title: string };
  // The chart may set the uid and title per release (two releases must not share a uid); the rest is the file.
  const { uid, title, ...rest } = shipped;
  const { uid: _uid, title: _title, ...file } = dashboard as Dashboard & { title: string };
  t.same(rest, file);
  t.match(uid, /^[A-Za-z0-9_-]{1,40}$/, 'a uid Grafana accepts (at most 40 characters)');
  t.type(title, 'string');
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
    /certificate expiry/i,
    /event-loop delay/i,
    /^CPU: total/,
    /resident memory/i,
  ]) {
    t.ok(titles.some((x) => want.test(x)), `a panel matches ${want}`);
  }
  t.end();
});

t.test('every metric the dashboard queries is exported by the sidecar and documented in docs/metrics.md', async (t) => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/metrics.md'), 'utf8');
  // Names appear in tables (`name`) and in the probe list (`name{labels}`): take every mention.
  const documented = new Set([...doc.matchAll(METRIC_NAME)].map((m) => m[0]));
  const families = await exported();
  const used = new Set(allExprs(dashboard).flatMap(metricsOf));
  t.ok(used.size > 10, `${used.size} metrics used`);
  t.same([...used].filter((m) => !documented.has(m)).sort(), [], 'metrics queried by the dashboard but absent from docs/metrics.md');
  t.same([...used].filter((m) => !families.has(m)).sort(), [], 'metrics queried by the dashboard that the sidecar does not export');
});

t.test('a default metric (a standard name an app may share) is read only from sidecar targets', (t) => {
  let scoped = 0;
  for (const expr of allExprs(dashboard)) {
    for (const name of metricsOf(expr)) {
      if (name.startsWith('ktls_sidecar_')) continue;
      scoped++;
      t.match(expr, new RegExp(`${name}\\{[^}]*\\}(\\[[^\\]]*\\])?\\)? and on \\(job, instance\\) ktls_sidecar_build_info`), `${name} in ${expr}`);
    }
  }
  t.ok(scoped >= 3, `${scoped} default metric reads`);
  t.end();
});

t.test('every label the dashboard groups or filters by exists on that metric in the sidecar', async (t) => {
  const families = await exported();
  const ignored = new Set(['namespace', 'pod', 'le']);
  let checked = 0;
  for (const expr of allExprs(dashboard)) {
    // `by (a, b) (rate(metric{x="1", ...}[...]))`, `by (a) (metric{...})` and `by (a) ((metric{...} and on ...))`
    for (const m of expr.matchAll(/by \(([^)]*)\) \(\(?(?:rate\()?((?:ktls_sidecar|process|nodejs)_[a-z0-9_]+)\{([^}]*)\}/g)) {
      const family = (m[2] ?? '').replace(/_bucket$/, '');
      const metric = families.get(family);
      if (!metric) {
        t.fail(`${family} is not exported`);
        continue;
      }
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
});
