// Every object that selects pods selects the pods the sidecar runs in, whatever labels those pods
// carry: the chart's own Deployment (default labels, or selectorLabels), and an existing Deployment
// with its own labels (`app: billing`) that gets the sidecar from the drop-in patch, applied with
// kustomize and with `kubectl patch`, as docs/deploy.md tells users to.
import t from 'tap';
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { EXAMPLES_DIR, exampleValuesFiles, find, podTemplate, render, validateManifest, type Manifest } from './helpers/render.js';
import { matches, podSelectors } from './helpers/selectors.js';

const run = promisify(execFile);
const LEGACY = join(EXAMPLES_DIR, 'legacy-app.yaml');
const LEGACY_DIR = join(EXAMPLES_DIR, 'legacy-billing');
// Everything that selects pods switched on (ServiceMonitor adds the metrics Service; PodMonitor is the other render).
const ALL_SELECTORS = {
  'pdb.enabled': 'true',
  'networkPolicy.enabled': 'true',
  'metrics.serviceMonitor.enabled': 'true',
  'metrics.podMonitor.enabled': 'false',
};

// tap's Test type without importing its internals: the argument of a test callback.
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

function checkSelectors(t: TapTest, ms: Manifest[], podLabels: Record<string, string>, minimum: number): void {
  const sels = podSelectors(ms);
  t.ok(sels.length >= minimum, `${sels.length} selectors found (${sels.map((s) => s.owner).join(', ')})`);
  for (const s of sels) t.ok(matches(s.labels, podLabels), `${s.owner} ${JSON.stringify(s.labels)} ⊆ pod labels ${JSON.stringify(podLabels)}`);
}

/** `kubectl kustomize` of examples/legacy-billing with the chart's rendered drop-in patch. */
async function kustomizeLegacy(t: TapTest, patch: string): Promise<Manifest> {
  const dir = t.testdir({});
  cpSync(LEGACY_DIR, dir, { recursive: true });
  writeFileSync(join(dir, 'ktls-sidecar-patch.yaml'), patch);
  const { stdout } = await run('kubectl', ['kustomize', dir], { timeout: 60_000 });
  const docs = parseAllDocuments(stdout).map((d) => d.toJS() as Manifest);
  t.equal(docs.length, 1, 'kustomize emits the one Deployment');
  return docs[0] as Manifest;
}

async function dropInPatch(extra: Record<string, string> = {}, kubeVersion?: string): Promise<string> {
  const ms = await render({
    release: 'billing-tls',
    namespace: 'billing',
    valuesFiles: [LEGACY],
    set: { 'dropIn.enabled': 'true', ...extra },
    showOnly: 'templates/dropin-patch.yaml',
    ...(kubeVersion ? { kubeVersion } : {}),
  });
  t.equal(ms.length, 1);
  return JSON.stringify(ms[0]);
}

t.test('the chart Deployment: every selector matches its pods (default labels and every example)', async (t) => {
  for (const valuesFiles of [[], ...exampleValuesFiles().filter((f) => f !== LEGACY).map((f) => [f])]) {
    const ms = await render({ valuesFiles, set: ALL_SELECTORS });
    const dep = ms.find((m) => m.kind === 'Deployment');
    if (!dep) continue; // own-pod-spec: no Deployment here (the snippet test covers it)
    checkSelectors(t, ms, podTemplate(dep).metadata.labels ?? {}, 5);
  }
});

t.test('selectorLabels replaces the selector of every object, and the Deployment pods carry it', async (t) => {
  const ms = await render({ set: { ...ALL_SELECTORS, 'selectorLabels.app': 'billing', 'workload.podLabels.team': 'payments' } });
  const labels = podTemplate(find(ms, 'Deployment')).metadata.labels ?? {};
  t.same(labels, { app: 'billing', team: 'payments' });
  checkSelectors(t, ms, labels, 5);
  for (const s of podSelectors(ms)) t.same(s.labels, { app: 'billing' }, `${s.owner} selects by the override only`);
  // The ServiceMonitor selects the metrics Service (by the chart's own labels), not pods.
  const sm = find(ms, 'ServiceMonitor');
  const metricsSvc = find(ms, 'Service', '-metrics');
  t.ok(matches((sm['spec'] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, metricsSvc.metadata.labels ?? {}), 'ServiceMonitor → metrics Service');
  const pm = await render({ set: { 'selectorLabels.app': 'billing', 'metrics.podMonitor.enabled': 'true' } });
  checkSelectors(t, pm, labels, 2);
});

t.test('workload.podLabels may add labels but not contradict a selector label', async (t) => {
  await t.rejects(render({ set: { 'selectorLabels.app': 'billing', 'workload.podLabels.app': 'other' } }), /workload\.podLabels\.app=other contradicts/);
});

t.test('selectorLabels are checked as label keys and values', async (t) => {
  await t.rejects(render({ setJson: { selectorLabels: { 'bad key!': 'x' } } }), /selectorLabels.*bad key!/s);
  await t.rejects(render({ setJson: { selectorLabels: { app: 'bad value!' } } }), /selectorLabels\/app/);
  t.ok((await render({ setJson: { selectorLabels: { 'example.com/app': 'billing-7.3' } } })).length > 0, 'a prefixed key is fine');
});

t.test('the modprobe DaemonSet pods are selected by nothing that selects the app pods', async (t) => {
  const ms = await render({ set: { ...ALL_SELECTORS, 'nodeSetup.modprobe.enabled': 'true' } });
  const dsLabels = podTemplate(find(ms, 'DaemonSet')).metadata.labels ?? {};
  for (const s of podSelectors(ms).filter((x) => !x.owner.startsWith('Deployment/'))) {
    t.notOk(matches(s.labels, dsLabels), `${s.owner} does not select the modprobe pods`);
  }
  const ds = find(ms, 'DaemonSet');
  t.ok(matches((ds['spec'] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, dsLabels), 'the DaemonSet selects its own pods');
});

t.test('legacy app: the drop-in patch, applied with kustomize, gives a valid Deployment every chart selector matches', async (t) => {
  const chart = await render({ release: 'billing-tls', namespace: 'billing', valuesFiles: [LEGACY], set: { 'metrics.podMonitor.enabled': 'true' } });
  t.notOk(chart.some((m) => m.kind === 'Deployment'), 'the chart renders no Deployment of its own');
  const dep = await kustomizeLegacy(t, await dropInPatch());
  t.doesNotThrow(() => validateManifest(dep), 'the patched Deployment is valid');
  const pod = podTemplate(dep);
  const original = parse(readFileSync(join(LEGACY_DIR, 'deployment.yaml'), 'utf8')) as Manifest;
  t.same(pod.metadata.labels, podTemplate(original).metadata.labels, 'the pod labels are the app team\'s, untouched');
  t.same((dep['spec'] as { selector: unknown }).selector, (original['spec'] as { selector: unknown }).selector, 'the selector is untouched');
  checkSelectors(t, chart, pod.metadata.labels ?? {}, 4);
  t.notOk(podSelectors(chart).some((s) => 'app.kubernetes.io/name' in s.labels), 'nothing requires app.kubernetes.io/name');
  t.same(pod.spec.containers.map((c) => c.name), ['billing', 'ktls-sidecar']);
  // The volumes point at what the chart installs.
  const cm = find(chart, 'ConfigMap', '-config').metadata.name;
  t.ok(pod.spec.volumes?.some((v) => v.configMap?.name === cm), `mounts ConfigMap ${cm}`);
  t.ok(pod.spec.volumes?.some((v) => v.secret?.secretName === 'billing-tls'), 'mounts the TLS Secret');
  t.equal(pod.spec.securityContext?.fsGroup, 65532);
  const app = pod.spec.containers[0] as unknown as { env?: unknown[]; image: string; lifecycle?: { preStop?: { sleep?: { seconds: number } } } };
  t.equal(app.image, 'registry.example.com/payments/billing:7.3.0', 'the app container keeps its fields');
  t.equal(app.env?.length, 1);
  t.equal(app.lifecycle?.preStop?.sleep?.seconds, 37, 'and gets the preStop that outlives the drain');
  t.equal((pod.spec as { serviceAccountName?: string }).serviceAccountName, 'billing', 'the app keeps its service account');
});

t.test('legacy app: kubectl patch --local with the same patch gives the same Deployment', async (t) => {
  const patch = await dropInPatch();
  const viaKustomize = await kustomizeLegacy(t, patch);
  const dir = t.testdir({ 'patch.yaml': patch });
  const { stdout } = await run(
    'kubectl',
    ['patch', '-f', join(LEGACY_DIR, 'deployment.yaml'), '--local', '--type', 'strategic', '--patch-file', join(dir, 'patch.yaml'), '-o', 'json'],
    { timeout: 60_000 },
  );
  t.same(podTemplate(JSON.parse(stdout) as Manifest).spec, podTemplate(viaKustomize).spec);
});

t.test('legacy app: the patch checksum ignores ktls.enabled and follows every other sidecar key', async (t) => {
  const sum = (patch: string): string | undefined =>
    (JSON.parse(patch) as { spec: { template: { metadata: { annotations: Record<string, string> } } } }).spec.template.metadata.annotations['checksum/ktls-sidecar-config'];
  const base = sum(await dropInPatch());
  t.match(base, /^[0-9a-f]{64}$/);
  t.equal(sum(await dropInPatch({ 'ktls.enabled': 'false' })), base, 'flag flip: same patch, no rollout');
  t.not(sum(await dropInPatch({ 'ktls.sampleRate': '0.5' })), base, 'a restart key: new checksum, rollout');
  // The same checksum the chart's own pod template would carry for these values.
  const snippet = await render({ release: 'billing-tls', namespace: 'billing', valuesFiles: [LEGACY], set: { 'snippet.enabled': 'true' } });
  t.equal(podTemplate(find(snippet, 'PodTemplate')).metadata.annotations?.['checksum/ktls-sidecar-config'], base);
});

t.test('the drop-in needs the Deployment and app container names', async (t) => {
  await t.rejects(render({ set: { 'dropIn.enabled': 'true', 'workload.enabled': 'false' }, showOnly: 'templates/dropin-patch.yaml' }), /dropIn\.deployment/);
  await t.rejects(
    render({ set: { 'dropIn.enabled': 'true', 'dropIn.deployment': 'x', 'workload.enabled': 'false' }, showOnly: 'templates/dropin-patch.yaml' }),
    /dropIn\.appContainer/,
  );
});
