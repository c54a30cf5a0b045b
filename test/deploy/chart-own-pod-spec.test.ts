// (b) The sidecar in the user's own pod spec, two ways: the PodTemplate snippet to copy, and the
// chart's named templates included from the user's own chart (this chart as a subchart).
import t from 'tap';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHART_DIR } from './helpers/helm.js';
import { container, find, podTemplate, render, validateManifest } from './helpers/render.js';

t.test('the PodTemplate snippet holds exactly the sidecar container and volumes of the workload', async (t) => {
  const ms = await render({ set: { 'snippet.enabled': 'true' } });
  const workload = podTemplate(find(ms, 'Deployment'));
  const snippet = podTemplate(find(ms, 'PodTemplate'));
  t.same(snippet.spec.containers, [container(workload, 'ktls-sidecar')]);
  t.same(snippet.spec.volumes, workload.spec.volumes);
  t.equal(snippet.spec.securityContext?.fsGroup, 65532, 'fsGroup lets the non-root sidecar read its key');
  t.same(snippet.metadata.annotations, workload.metadata.annotations, 'checksum and scrape annotations to copy');
});

t.test('workload.enabled=false installs the sidecar pieces without a Deployment', async (t) => {
  const ms = await render({ set: { 'workload.enabled': 'false' } });
  t.notOk(ms.some((m) => m.kind === 'Deployment'));
  t.ok(find(ms, 'ConfigMap', '-config'));
  t.ok(find(ms, 'Service'));
});

t.test('a parent chart includes the sidecar container from this chart as a subchart', async (t) => {
  const dir = t.testdir({});
  const parent = join(dir, 'shop');
  mkdirSync(join(parent, 'templates'), { recursive: true });
  mkdirSync(join(parent, 'charts'));
  cpSync(CHART_DIR, join(parent, 'charts', 'ktls-sidecar'), { recursive: true });
  writeFileSync(
    join(parent, 'Chart.yaml'),
    'apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n  - name: ktls-sidecar\n    version: 0.1.0\n',
  );
  writeFileSync(
    join(parent, 'values.yaml'),
    'ktls-sidecar:\n  workload: { enabled: false }\n  snippet: { enabled: true }\n  upstream: { port: 3000 }\n  sidecar: { tls: { secretName: shop-tls } }\n',
  );
  // What docs/deploy.md tells users to write: the subchart's own context via .Subcharts.
  writeFileSync(
    join(parent, 'templates', 'deployment.yaml'),
    `{{- $ktls := index .Subcharts "ktls-sidecar" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-web
spec:
  selector:
    matchLabels:
      {{- include "ktls-sidecar.selectorLabels" $ktls | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ktls-sidecar.selectorLabels" $ktls | nindent 8 }}
      annotations:
        {{- include "ktls-sidecar.podAnnotations" $ktls | nindent 8 }}
    spec:
      securityContext:
        fsGroup: 65532
      containers:
        - name: web
          image: registry.example.com/shop/web:2.14.0
        - {{ include "ktls-sidecar.container" $ktls | nindent 10 | trim }}
      volumes:
        {{- include "ktls-sidecar.volumes" $ktls | nindent 8 }}
`,
  );
  const ms = await render({ chartDir: parent });
  for (const m of ms) t.doesNotThrow(() => validateManifest(m), `${m.kind}/${m.metadata.name} is valid`);
  const mine = podTemplate(find(ms, 'Deployment', 'shop-web'));
  const snippet = podTemplate(find(ms, 'PodTemplate'));
  t.same(container(mine, 'ktls-sidecar'), snippet.spec.containers[0], 'same container as the subchart renders');
  t.same(mine.spec.volumes, snippet.spec.volumes);
  const cmName = mine.spec.volumes?.find((v) => v.configMap)?.configMap?.name ?? '';
  t.ok(ms.some((m) => m.kind === 'ConfigMap' && m.metadata.name === cmName), `the subchart renders ConfigMap ${cmName}`);
  const svc = find(ms, 'Service');
  t.has(mine.metadata.labels ?? {}, (svc['spec'] as { selector: Record<string, string> }).selector, 'the Service selects my pods');
});
