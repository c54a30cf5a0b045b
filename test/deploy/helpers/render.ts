// Render the chart with helm and look at the result as typed objects.

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, PodTemplate, Service } from 'kubernetes-models/v1';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Certificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { PodMonitor, PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { CHART_DIR, helm } from './helm.js';

/** One rendered manifest: plain data as helm printed it. */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/**
 * Every kind the chart may render, with the model that validates it. Anything else is an error.
 * The models' constructors take their own typed interfaces; rendered YAML is untyped data, so the
 * table stores them as constructors of `never` (any constructor is assignable to that) and the
 * data is handed over as-is: validate() is what checks it.
 */
type ModelClass = new (data: never) => { validate(): void };
const MODELS: Record<string, ModelClass> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/PodTemplate': PodTemplate,
  'apps/v1/Deployment': Deployment,
  'apps/v1/DaemonSet': DaemonSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'cert-manager.io/v1/Certificate': Certificate,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};

/** Validate one manifest against its kubernetes-models schema; throws with the kind and name. */
export function validateManifest(m: Manifest): void {
  const Model = MODELS[`${m.apiVersion}/${m.kind}`];
  if (!Model) throw new Error(`no kubernetes-models schema for ${m.apiVersion} ${m.kind} (${m.metadata?.name})`);
  try {
    new Model(m as never).validate();
  } catch (err) {
    throw new Error(`${m.kind}/${m.metadata.name}: ${(err as Error).message}`, { cause: err });
  }
}

export const EXAMPLES_DIR = join(CHART_DIR, 'examples');

/** Example values files shipped with the chart (absolute paths). */
export function exampleValuesFiles(): string[] {
  return readdirSync(EXAMPLES_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => join(EXAMPLES_DIR, f));
}

export interface RenderOptions {
  valuesFiles?: string[];
  set?: Record<string, string>;
  /** `--set-json`: typed values (numbers, booleans) where `--set` would give strings. */
  setJson?: Record<string, unknown>;
  release?: string;
  namespace?: string;
  /** `--kube-version` (default 1.30.0): the cluster version templates see in .Capabilities. */
  kubeVersion?: string;
  /** `--show-only`: one template of the chart (e.g. templates/dropin-patch.yaml). */
  showOnly?: string;
  chartDir?: string;
}

function helmArgs(o: RenderOptions): string[] {
  const args: string[] = [];
  for (const f of o.valuesFiles ?? []) args.push('-f', f);
  for (const [k, v] of Object.entries(o.set ?? {})) args.push('--set', `${k}=${v}`);
  for (const [k, v] of Object.entries(o.setJson ?? {})) args.push('--set-json', `${k}=${JSON.stringify(v)}`);
  return args;
}

/** `helm template` → parsed manifests. Throws with helm's stderr if rendering fails. */
export async function render(o: RenderOptions = {}): Promise<Manifest[]> {
  const r = await helm([
    'template',
    o.release ?? 'shop',
    o.chartDir ?? CHART_DIR,
    '--namespace',
    o.namespace ?? 'prod',
    '--kube-version',
    o.kubeVersion ?? '1.30.0',
    ...(o.showOnly ? ['--show-only', o.showOnly] : []),
    ...helmArgs(o),
  ]);
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  const out: Manifest[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`rendered YAML does not parse: ${d.errors[0]?.message}`);
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v as Manifest);
  }
  return out;
}

/** `helm lint --strict` over the chart with the given values. */
export async function lint(o: RenderOptions = {}): Promise<{ code: number; output: string }> {
  const r = await helm(['lint', '--strict', o.chartDir ?? CHART_DIR, ...helmArgs(o)]);
  return { code: r.code, output: r.stdout + r.stderr };
}

export function find(ms: Manifest[], kind: string, nameSuffix = ''): Manifest {
  const m = ms.find((x) => x.kind === kind && x.metadata.name.endsWith(nameSuffix));
  if (!m) throw new Error(`no ${kind}${nameSuffix ? ` named *${nameSuffix}` : ''} among ${ms.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return m;
}

/** Minimal typed views of the parts the tests look at. */
export interface ContainerView {
  name: string;
  image: string;
  args?: string[];
  ports?: { name: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    privileged?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
  };
}

export interface PodSpecView {
  containers: ContainerView[];
  initContainers?: ContainerView[];
  volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[];
  securityContext?: { fsGroup?: number; runAsNonRoot?: boolean; seccompProfile?: { type: string } };
  hostPID?: boolean;
}

export interface PodTemplateView {
  metadata: { annotations?: Record<string, string>; labels?: Record<string, string> };
  spec: PodSpecView;
}

/** The pod template of a Deployment/DaemonSet, or the template of a PodTemplate. */
export function podTemplate(m: Manifest): PodTemplateView {
  const t = m.kind === 'PodTemplate' ? m['template'] : (m['spec'] as { template?: unknown } | undefined)?.template;
  if (!t) throw new Error(`${m.kind}/${m.metadata.name} has no pod template`);
  return t as PodTemplateView;
}

export function container(pod: PodTemplateView, name: string): ContainerView {
  const c = pod.spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} in [${pod.spec.containers.map((x) => x.name).join(', ')}]`);
  return c;
}
