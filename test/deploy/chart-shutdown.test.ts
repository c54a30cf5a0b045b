// The sidecar as a native sidecar (an init container with restartPolicy: Always) or a regular
// container, in every form the chart renders, and the shutdown order either way: the app outlives
// the sidecar's drain (regular), or Kubernetes stops the app first and the sidecar last (native);
// the grace period covers the preStop sleeps and the drain.
import t from 'tap';
import { find, podTemplate, render, validateManifest, type ContainerView, type Manifest, type PodTemplateView } from './helpers/render.js';

interface Lifecycle {
  preStop?: { sleep?: { seconds: number }; exec?: { command: string[] } };
}
type Full = ContainerView & { restartPolicy?: string; lifecycle?: Lifecycle; terminationMessagePolicy?: string; startupProbe?: unknown };
type Spec = PodTemplateView['spec'] & { terminationGracePeriodSeconds?: number; automountServiceAccountToken?: boolean };

function spec(m: Manifest): Spec {
  return podTemplate(m).spec;
}
function sidecarIn(list: ContainerView[] | undefined): Full | undefined {
  return list?.find((c) => c.name === 'ktls-sidecar');
}
/** Seconds a preStop sleeps, whichever form it takes. */
function preStopSeconds(c: Full | undefined): number {
  const p = c?.lifecycle?.preStop;
  if (!p) return 0;
  if (p.sleep) return p.sleep.seconds;
  if (p.exec?.command[0] === 'sleep') return Number(p.exec.command[1]);
  throw new Error(`unexpected preStop ${JSON.stringify(p)}`);
}

t.test('regular sidecar: the app sleeps through the sidecar preStop and drain; the grace period covers it', async (t) => {
  for (const drain of ['30s', '2m', '1500ms']) {
    const s = spec(find(await render({ set: { 'sidecar.drainTimeout': drain } }), 'Deployment'));
    const drainS = Math.ceil(drain.endsWith('ms') ? Number(drain.slice(0, -2)) / 1000 : drain.endsWith('m') ? Number(drain.slice(0, -1)) * 60 : Number(drain.slice(0, -1)));
    const side = sidecarIn(s.containers);
    const app = s.containers.find((c) => c.name === 'app') as Full;
    t.notOk(s.initContainers, `${drain}: no init containers`);
    t.equal(side?.restartPolicy, undefined, 'a regular container');
    t.equal(preStopSeconds(side), 5, 'the sidecar keeps accepting while endpoints update');
    t.ok(preStopSeconds(app) > 5 + drainS, `${drain}: app preStop ${preStopSeconds(app)} s outlives sidecar preStop + drain (${5 + drainS} s)`);
    t.ok((s.terminationGracePeriodSeconds ?? 30) >= preStopSeconds(app) + 5, `grace ${s.terminationGracePeriodSeconds} s leaves the app time to exit`);
  }
});

t.test('native sidecar: an init container with restartPolicy Always; app stopped first, sidecar last', async (t) => {
  const ms = await render({ set: { nativeSidecar: 'true' } });
  for (const m of ms) t.doesNotThrow(() => validateManifest(m), `${m.kind}/${m.metadata.name} is valid`);
  const s = spec(find(ms, 'Deployment'));
  t.same(s.containers.map((c) => c.name), ['app'], 'only the app is a regular container');
  const side = sidecarIn(s.initContainers);
  t.equal(side?.restartPolicy, 'Always');
  t.ok(side?.startupProbe, 'startupProbe kept: the app starts once the sidecar is up');
  t.ok(side?.readinessProbe, 'readinessProbe kept');
  t.equal(preStopSeconds(side), 0, 'no sidecar sleep: it is stopped after the app, long after the endpoints update');
  t.equal(preStopSeconds(s.containers[0] as Full), 5, 'the app sleeps while endpoints update, then exits first');
  t.ok((s.terminationGracePeriodSeconds ?? 0) >= 5 + 30 + 1, `grace ${s.terminationGracePeriodSeconds} s covers app preStop + sidecar drain`);
});

t.test('native sidecar in the snippet and the drop-in patch too', async (t) => {
  const ms = await render({ set: { nativeSidecar: 'true', 'snippet.enabled': 'true' } });
  const snip = spec(find(ms, 'PodTemplate'));
  t.same(snip.containers, []);
  t.same(sidecarIn(snip.initContainers), sidecarIn(spec(find(ms, 'Deployment')).initContainers), 'the same init container as the workload');
  const [patch] = await render({
    set: { nativeSidecar: 'true', 'workload.enabled': 'false', 'dropIn.enabled': 'true', 'dropIn.deployment': 'web', 'dropIn.appContainer': 'web' },
    showOnly: 'templates/dropin-patch.yaml',
  });
  const p = spec(patch as Manifest);
  t.equal(sidecarIn(p.initContainers)?.restartPolicy, 'Always');
  t.same(p.containers.map((c) => c.name), ['web'], 'only the app container is patched (its preStop)');
  // With no app preStop, no `containers:` key at all: a null list in a strategic-merge patch deletes the list.
  const [bare] = await render({
    set: { nativeSidecar: 'true', 'workload.enabled': 'false', 'dropIn.enabled': 'true', 'dropIn.deployment': 'web', 'dropIn.appPreStopSleepSeconds': '0' },
    showOnly: 'templates/dropin-patch.yaml',
  });
  t.notOk('containers' in spec(bare as Manifest), 'no containers key');
});

t.test('nativeSidecar is refused for Kubernetes < 1.29, naming the value', async (t) => {
  await t.rejects(render({ set: { nativeSidecar: 'true' }, kubeVersion: '1.28.9' }), /nativeSidecar: true needs Kubernetes >= 1.29/);
  t.ok((await render({ set: { nativeSidecar: 'true' }, kubeVersion: '1.29.0' })).length > 0);
});

t.test('the app preStop uses the sleep action from Kubernetes 1.30, and `sleep` in the image before', async (t) => {
  const app = (kv: string): Promise<Full> =>
    render({ kubeVersion: kv }).then((ms) => spec(find(ms, 'Deployment')).containers.find((c) => c.name === 'app') as Full);
  t.same((await app('1.30.0')).lifecycle?.preStop, { sleep: { seconds: 37 } });
  t.same((await app('1.29.0')).lifecycle?.preStop, { exec: { command: ['sleep', '37'] } });
});

t.test('explicit preStop and grace values: used as given, a too short grace fails naming the key', async (t) => {
  const s = spec(find(await render({ set: { 'workload.app.preStopSleepSeconds': '0', 'workload.terminationGracePeriodSeconds': '40' } }), 'Deployment'));
  t.equal(preStopSeconds(s.containers[0] as Full), 0);
  t.equal(s.terminationGracePeriodSeconds, 40);
  await t.rejects(render({ set: { 'workload.terminationGracePeriodSeconds': '30' } }), /workload\.terminationGracePeriodSeconds=30 is shorter than the shutdown needs \(38 s/);
  await t.rejects(
    render({ set: { 'workload.enabled': 'false', 'dropIn.enabled': 'true', 'dropIn.deployment': 'w', 'dropIn.appContainer': 'w', 'dropIn.terminationGracePeriodSeconds': '10' }, showOnly: 'templates/dropin-patch.yaml' }),
    /dropIn\.terminationGracePeriodSeconds=10 is shorter/,
  );
});

t.test('terminationMessagePolicy and automountServiceAccountToken', async (t) => {
  const ms = await render({ set: { 'snippet.enabled': 'true' } });
  const s = spec(find(ms, 'Deployment'));
  t.equal(sidecarIn(s.containers)?.terminationMessagePolicy, 'FallbackToLogsOnError');
  t.equal(sidecarIn(spec(find(ms, 'PodTemplate')).containers)?.terminationMessagePolicy, 'FallbackToLogsOnError');
  t.equal(s.automountServiceAccountToken, false, 'no API token by default: the sidecar never calls the API server');
  const on = spec(find(await render({ set: { 'workload.automountServiceAccountToken': 'true' } }), 'Deployment'));
  t.equal(on.automountServiceAccountToken, true, 'overridable for an app that needs it');
});
