// The sidecar container as the chart renders it: image, config mount, ports, probes on the admin
// endpoints, hardening, and the wiring between ConfigMap, Service and pod.
import t from 'tap';
import { parse } from 'yaml';
import { container, find, podTemplate, render, type Manifest } from './helpers/render.js';

const SIDECAR = 'ktls-sidecar';

function sidecarConfig(ms: Manifest[]): Record<string, Record<string, unknown>> {
  const cm = find(ms, 'ConfigMap', '-config');
  const text = (cm['data'] as Record<string, string>)['config.yaml'];
  if (text === undefined) throw new Error('ConfigMap has no config.yaml');
  return parse(text) as Record<string, Record<string, unknown>>;
}

t.test('the Deployment runs the app and the sidecar container', async (t) => {
  const pod = podTemplate(find(await render({ set: { 'sidecar.image.tag': '9.9.9' } }), 'Deployment'));
  t.same(pod.spec.containers.map((c) => c.name), ['app', SIDECAR]);
  t.equal(container(pod, SIDECAR).image, 'ktls-sidecar:9.9.9');
});

t.test('the sidecar reads its config from a directory-mounted ConfigMap (no subPath)', async (t) => {
  const ms = await render();
  const pod = podTemplate(find(ms, 'Deployment'));
  const c = container(pod, SIDECAR);
  const args = c.args ?? [];
  t.equal(args[0], '--config');
  const file = args[1] ?? '';
  const mount = (c.volumeMounts ?? []).find((m) => file.startsWith(`${m.mountPath}/`));
  if (!mount) throw new Error(`no mount holds ${file}`);
  t.equal(mount.subPath, undefined, 'a subPath mount would never see ConfigMap updates');
  t.equal(mount.readOnly, true);
  const vol = (pod.spec.volumes ?? []).find((v) => v.name === mount.name);
  t.equal(vol?.configMap?.name, find(ms, 'ConfigMap', '-config').metadata.name);
  t.equal(file.slice(mount.mountPath.length + 1), 'config.yaml', 'the file is the ConfigMap key');
  t.notOk((c.volumeMounts ?? []).some((m) => m.subPath), 'no subPath mounts at all');
});

t.test('liveness and readiness probe the admin endpoints on the admin port', async (t) => {
  const ms = await render({ set: { 'sidecar.ports.admin': '9911' } });
  const c = container(podTemplate(find(ms, 'Deployment')), SIDECAR);
  t.same(c.livenessProbe?.httpGet, { path: '/healthz', port: 'admin' });
  t.same(c.readinessProbe?.httpGet, { path: '/readyz', port: 'admin' });
  t.same(c.ports?.find((p) => p.name === 'admin')?.containerPort, 9911);
  t.same(c.ports?.find((p) => p.name === 'https')?.containerPort, 8443);
  const cfg = sidecarConfig(ms);
  t.same(cfg['admin'], { host: '0.0.0.0', port: 9911 }, 'admin binds the pod IP the kubelet probes');
  t.same(cfg['listen'], { host: '0.0.0.0', port: 8443 });
});

t.test('the sidecar is hardened: non-root, read-only root, no capabilities, RuntimeDefault seccomp', async (t) => {
  const pod = podTemplate(find(await render(), 'Deployment'));
  const sc = container(pod, SIDECAR).securityContext;
  t.equal(sc?.runAsNonRoot, true);
  t.equal(sc?.runAsUser, 65532);
  t.equal(sc?.readOnlyRootFilesystem, true);
  t.equal(sc?.allowPrivilegeEscalation, false);
  t.same(sc?.capabilities?.drop, ['ALL']);
  t.equal(sc?.capabilities?.add, undefined, 'kTLS needs no capability');
  t.same(sc?.seccompProfile, { type: 'RuntimeDefault' });
  t.equal(pod.spec.securityContext?.runAsNonRoot, true);
  t.same(pod.spec.securityContext?.seccompProfile, { type: 'RuntimeDefault' });
});

t.test('the read-only sidecar gets a writable /tmp', async (t) => {
  const pod = podTemplate(find(await render(), 'Deployment'));
  const tmp = (container(pod, SIDECAR).volumeMounts ?? []).find((m) => m.mountPath === '/tmp');
  t.ok(tmp, '/tmp is mounted');
  t.notOk(tmp?.readOnly);
});

t.test('the config points the sidecar at the app on loopback and at the mounted certificate', async (t) => {
  const ms = await render({ set: { 'upstream.port': '3000', 'sidecar.tls.secretName': 'shop-tls' } });
  const cfg = sidecarConfig(ms);
  t.same(cfg['upstream'], { url: 'http://127.0.0.1:3000' });
  const pod = podTemplate(find(ms, 'Deployment'));
  const tlsVol = (pod.spec.volumes ?? []).find((v) => v.secret?.secretName === 'shop-tls');
  if (!tlsVol) throw new Error('no volume from the TLS Secret');
  const mount = (container(pod, SIDECAR).volumeMounts ?? []).find((m) => m.name === tlsVol.name);
  t.equal(cfg['tls']?.['cert'], `${mount?.mountPath}/tls.crt`);
  t.equal(cfg['tls']?.['key'], `${mount?.mountPath}/tls.key`);
  t.equal(cfg['config']?.['watch'], true, 'the sidecar watches its file, so the flag applies live');
});

t.test('tcp mode writes upstream.address and the PROXY protocol setting', async (t) => {
  const cfg = sidecarConfig(await render({ set: { 'sidecar.mode': 'tcp', 'upstream.port': '5432', 'upstream.proxyProtocol': 'v2' } }));
  t.equal(cfg['mode'], 'tcp');
  t.same(cfg['upstream'], { address: '127.0.0.1:5432', proxyProtocol: 'v2' });
});

t.test('mTLS mounts the CA bundle and points tls.clientCA at it', async (t) => {
  const ms = await render({ set: { 'sidecar.mtls.enabled': 'true', 'sidecar.mtls.caSecretName': 'client-ca' } });
  const cfg = sidecarConfig(ms);
  const pod = podTemplate(find(ms, 'Deployment'));
  const vol = (pod.spec.volumes ?? []).find((v) => v.secret?.secretName === 'client-ca');
  if (!vol) throw new Error('no volume from the CA Secret');
  const mount = (container(pod, SIDECAR).volumeMounts ?? []).find((m) => m.name === vol.name);
  t.equal(cfg['tls']?.['clientCA'], `${mount?.mountPath}/ca.crt`);
  t.equal(cfg['tls']?.['requestCert'], true);
});

t.test('cert-manager issues into the Secret the pod mounts', async (t) => {
  const ms = await render({
    set: { 'sidecar.tls.certManager.enabled': 'true', 'sidecar.tls.certManager.issuerRef.name': 'ca' },
  });
  const cert = find(ms, 'Certificate');
  const secretName = (cert['spec'] as { secretName: string }).secretName;
  const pod = podTemplate(find(ms, 'Deployment'));
  t.ok((pod.spec.volumes ?? []).some((v) => v.secret?.secretName === secretName), `pod mounts ${secretName}`);
  t.same((cert['spec'] as { dnsNames: string[] }).dnsNames, ['shop-ktls-sidecar.prod.svc', 'shop-ktls-sidecar.prod.svc.cluster.local']);
});

t.test('the Service exposes only the sidecar TLS port', async (t) => {
  const ms = await render();
  const svc = find(ms, 'Service');
  const ports = (svc['spec'] as { ports: { name: string; targetPort: string; port: number }[] }).ports;
  t.same(ports.map((p) => [p.name, p.targetPort, p.port]), [['https', 'https', 443]]);
  const selector = (svc['spec'] as { selector: Record<string, string> }).selector;
  t.has(podTemplate(find(ms, 'Deployment')).metadata.labels ?? {}, selector, 'the Service selects the pods');
});

t.test('pods carry Prometheus scrape annotations for the admin port, unless turned off', async (t) => {
  const on = podTemplate(find(await render(), 'Deployment')).metadata.annotations ?? {};
  t.equal(on['prometheus.io/scrape'], 'true');
  t.equal(on['prometheus.io/port'], '9901');
  t.equal(on['prometheus.io/path'], '/metrics');
  const off = podTemplate(find(await render({ set: { 'metrics.scrapeAnnotations': 'false' } }), 'Deployment')).metadata.annotations ?? {};
  t.notOk('prometheus.io/scrape' in off);
});

t.test('the grace period outlasts the preStop sleep plus the drain timeout by default', async (t) => {
  const ms = await render();
  const spec = (find(ms, 'Deployment')['spec'] as { template: { spec: { terminationGracePeriodSeconds: number } } }).template.spec;
  const cfg = sidecarConfig(ms);
  const drain = Number(String(cfg['shutdown']?.['drainTimeout']).replace(/s$/, ''));
  t.ok(spec.terminationGracePeriodSeconds > drain + 5, `${spec.terminationGracePeriodSeconds} s > ${drain} s + 5 s`);
});

t.test('the modprobe DaemonSet is off by default and spells out its privilege when on', async (t) => {
  t.notOk((await render()).some((m) => m.kind === 'DaemonSet'));
  const ds = find(await render({ set: { 'nodeSetup.modprobe.enabled': 'true' } }), 'DaemonSet');
  const pod = podTemplate(ds);
  t.equal(pod.spec.hostPID, true);
  const init = pod.spec.initContainers?.[0];
  t.equal(init?.securityContext?.privileged, true);
  t.match((init as { command?: string[] } | undefined)?.command?.join(' '), /nsenter .*modprobe tls/);
  t.equal(pod.spec.containers[0]?.securityContext?.privileged, undefined, 'only the init container is privileged');
});
