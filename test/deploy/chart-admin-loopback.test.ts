// The sidecar accepts admin mutations (PUT /ktls) from loopback only. The chart
// binds admin to the pod IP for probes and scraping, so: everything the chart
// itself sends to the admin port must be a read, every documented PUT must go
// to the pod's loopback, and the mounted key must not trip the sidecar's
// "key readable by other users" warning.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { REPO_ROOT } from './helpers/helm.js';
import { container, exampleValuesFiles, find, podTemplate, render } from './helpers/render.js';

interface ProbeView {
  httpGet?: { path: string; port: string | number };
  exec?: unknown;
}

t.test('probes are HTTP GETs on the admin port; nothing rendered sends a PUT', async (t) => {
  const ms = await render();
  const c = container(podTemplate(find(ms, 'Deployment')), 'ktls-sidecar') as unknown as Record<string, ProbeView | undefined>;
  for (const name of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
    const probe = c[name];
    t.equal(probe?.httpGet?.port, 'admin', `${name} uses httpGet (always GET) on the admin port`);
    t.equal(probe?.exec, undefined, `${name} runs no command`);
  }
  t.notMatch(JSON.stringify(ms), /-X\s*PUT|--request\s*PUT/, 'no rendered command sends a PUT');
});

t.test('every documented curl -X PUT goes to the pod loopback', (t) => {
  const files = [
    join(REPO_ROOT, 'charts/ktls-sidecar/templates/NOTES.txt'),
    join(REPO_ROOT, 'docs/deploy.md'),
    join(REPO_ROOT, 'README.md'),
    ...exampleValuesFiles(),
  ];
  let puts = 0;
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => /curl\b.*-X\s*PUT/.test(l));
    for (const line of lines) {
      puts++;
      t.match(line, /(localhost|127\.0\.0\.1|\[::1\])(:[^/]+)?\/ktls/, `${file.replace(`${REPO_ROOT}/`, '')}: ${line.trim()}`);
    }
  }
  t.ok(puts >= 3, `found the documented PUTs (${puts})`);
  t.end();
});

t.test('the TLS Secret is mounted without permission bits for other users', async (t) => {
  const pod = podTemplate(find(await render(), 'Deployment'));
  const vols = (pod.spec.volumes ?? []) as Array<{ secret?: { secretName: string; defaultMode?: number } }>;
  const secret = vols.find((v) => v.secret)?.secret;
  t.ok(secret, 'a Secret volume');
  t.equal((secret?.defaultMode ?? 0o644) & 0o007, 0, 'no bits for "other" (group read goes through the pod fsGroup, which the sidecar accepts)');
  t.ok(pod.spec.securityContext?.fsGroup, 'the pod has an fsGroup');
});
