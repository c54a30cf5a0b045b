// ktls.enabled is the runtime flag: the sidecar applies it live from its watched config file. Turning
// it off (the rollback) must change only the ConfigMap — a changed pod template would restart every
// pod, slowly, dropping connections. Every other key needs a restart and must change the template.
import t from 'tap';
import { find, podTemplate, render, type Manifest } from './helpers/render.js';

function byName(ms: Manifest[]): Map<string, Manifest> {
  return new Map(ms.map((m) => [`${m.kind}/${m.metadata.name}`, m]));
}

function changed(a: Manifest[], b: Manifest[]): string[] {
  const A = byName(a);
  const B = byName(b);
  const keys = new Set([...A.keys(), ...B.keys()]);
  return [...keys].filter((k) => JSON.stringify(A.get(k)) !== JSON.stringify(B.get(k))).sort();
}

t.test('toggling ktls.enabled changes only the sidecar ConfigMap', async (t) => {
  const on = await render({ set: { 'ktls.enabled': 'true' } });
  const off = await render({ set: { 'ktls.enabled': 'false' } });
  t.same(changed(on, off), ['ConfigMap/shop-ktls-sidecar-config']);
  t.match(JSON.stringify(find(off, 'ConfigMap', '-config')['data']), /enabled: false/);
});

t.test('toggling ktls.enabled leaves the PodTemplate snippet (own pod spec) unchanged too', async (t) => {
  const set = { 'workload.enabled': 'false', 'snippet.enabled': 'true' };
  const on = await render({ set: { ...set, 'ktls.enabled': 'true' } });
  const off = await render({ set: { ...set, 'ktls.enabled': 'false' } });
  t.same(changed(on, off), ['ConfigMap/shop-ktls-sidecar-config']);
});

const restartKeys: [key: string, value: string][] = [
  ['ktls.direction', 'txrx'],
  ['ktls.sampleRate', '0.05'],
  ['upstream.port', '3000'],
  ['sidecar.logLevel', 'debug'],
  ['sidecar.workers', '2'],
  ['sidecar.bindAddress', '::'],
];
for (const [key, value] of restartKeys) {
  t.test(`changing ${key} rolls the pods (checksum annotation changes)`, async (t) => {
    const sum = (ms: Manifest[]): string | undefined =>
      podTemplate(find(ms, 'Deployment')).metadata.annotations?.['checksum/ktls-sidecar-config'];
    const before = sum(await render());
    const after = sum(await render({ set: { [key]: value } }));
    t.match(before, /^[0-9a-f]{64}$/);
    t.not(after, before);
  });
}
