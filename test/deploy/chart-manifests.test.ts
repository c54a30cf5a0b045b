// Every manifest the chart renders, over the default values and every example values file, is a
// valid object of its kind according to kubernetes-models (the Kubernetes OpenAPI schemas, plus the
// cert-manager and Prometheus Operator CRD schemas).
import t from 'tap';
import { basename } from 'node:path';
import { exampleValuesFiles, render, validateManifest, type Manifest } from './helpers/render.js';

// tap's Test type without importing its internals: the argument of a test callback.
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

function validateAll(t: TapTest, ms: Manifest[]): void {
  t.ok(ms.length > 0, 'something was rendered');
  for (const m of ms) {
    t.doesNotThrow(() => validateManifest(m), `${m.kind}/${m.metadata.name} is valid`);
  }
}

t.test('default values render only valid manifests', async (t) => {
  const ms = await render();
  validateAll(t, ms);
  t.same(ms.map((m) => m.kind).sort(), ['ConfigMap', 'Deployment', 'Service'], 'config, workload, service (the dashboard is opt-in)');
});

for (const file of exampleValuesFiles()) {
  t.test(`examples/${basename(file)} renders only valid manifests`, async (t) => {
    validateAll(t, await render({ valuesFiles: [file] }));
  });
}

t.test('every optional object renders valid when switched on together', async (t) => {
  const valuesFiles = exampleValuesFiles().filter((f) => /monitoring|cert-manager|node-setup/.test(f));
  // ServiceMonitor and PodMonitor exclude each other (a pod scraped twice): one render with each.
  const ms = [
    ...(await render({ valuesFiles, set: { 'snippet.enabled': 'true' } })),
    ...(await render({
      valuesFiles,
      set: { 'metrics.podMonitor.enabled': 'false', 'metrics.serviceMonitor.enabled': 'true', 'nativeSidecar': 'true', 'snippet.enabled': 'true' },
    })),
  ];
  validateAll(t, ms);
  const kinds = new Set(ms.map((m) => `${m.apiVersion}/${m.kind}`));
  for (const k of [
    'cert-manager.io/v1/Certificate',
    'monitoring.coreos.com/v1/ServiceMonitor',
    'monitoring.coreos.com/v1/PodMonitor',
    'monitoring.coreos.com/v1/PrometheusRule',
    'policy/v1/PodDisruptionBudget',
    'networking.k8s.io/v1/NetworkPolicy',
    'apps/v1/DaemonSet',
    'v1/PodTemplate',
  ]) {
    t.ok(kinds.has(k), `${k} rendered`);
  }
});

t.test('the validator rejects a broken manifest (so the tests above can fail)', async (t) => {
  const ms = await render();
  const dep = ms.find((m) => m.kind === 'Deployment');
  if (!dep) throw new Error('no Deployment rendered');
  const broken = structuredClone(dep);
  (broken['spec'] as { replicas: unknown }).replicas = 'two';
  t.throws(() => validateManifest(broken), /replicas/);
  t.throws(() => validateManifest({ ...dep, kind: 'Unknown' }), /no kubernetes-models schema/);
});
