// Which rendered objects select pods, and with what: the label maps a Service, PDB, NetworkPolicy,
// PodMonitor or Deployment matches. Used to check that every selector matches the pods it is for.
import type { Manifest } from './render.js';

export interface Selector {
  /** `Kind/name` of the selecting object. */
  readonly owner: string;
  readonly labels: Record<string, string>;
}

type Labels = Record<string, string>;

/** Every pod selector among the manifests (matchExpressions are not used by the chart, and refused here). */
export function podSelectors(ms: Manifest[]): Selector[] {
  const out: Selector[] = [];
  const add = (m: Manifest, sel: { matchLabels?: Labels; matchExpressions?: unknown } | Labels | undefined): void => {
    if (!sel) throw new Error(`${m.kind}/${m.metadata.name} has no selector`);
    if ('matchExpressions' in sel && sel.matchExpressions) throw new Error(`${m.kind}/${m.metadata.name}: matchExpressions not expected`);
    const labels = ('matchLabels' in sel ? sel.matchLabels : sel) as Labels | undefined;
    if (!labels || Object.keys(labels).length === 0) throw new Error(`${m.kind}/${m.metadata.name} selects everything`);
    out.push({ owner: `${m.kind}/${m.metadata.name}`, labels });
  };
  for (const m of ms) {
    const spec = m['spec'] as Record<string, unknown> | undefined;
    switch (m.kind) {
      case 'Service':
        add(m, spec?.['selector'] as Labels | undefined);
        break;
      case 'Deployment':
      case 'PodDisruptionBudget':
      case 'PodMonitor':
        add(m, spec?.['selector'] as { matchLabels?: Labels } | undefined);
        break;
      case 'NetworkPolicy':
        add(m, spec?.['podSelector'] as { matchLabels?: Labels } | undefined);
        break;
      default:
        break;
    }
  }
  return out;
}

/** True when every label of `selector` is on `labels` with the same value. */
export function matches(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
