// The IPC protocol between the primary of `workers: N` and its workers (node:cluster's
// channel, JSON). Requests carry an id the reply echoes; everything else is one-way.
// Every message names itself with a `ktls-sidecar:` kind, so nothing else on the
// channel (prom-client's own cluster messages, say) is mistaken for ours.

import type { KernelProbeSummary, ListenerInfo } from '../log.js';
import type { FlagSource } from '../vocabulary.js';

/** Primary → worker. */
export type ToWorker =
  /** Reply with `registry.getMetricsAsJSON()`. */
  | { readonly kind: 'ktls-sidecar:metrics'; readonly id: number }
  /** Reply with the worker's `Readiness`. */
  | { readonly kind: 'ktls-sidecar:readiness'; readonly id: number }
  /** Set the flag (as `source` would have), then reply `{ enabled }`. */
  | { readonly kind: 'ktls-sidecar:flag'; readonly id: number; readonly enabled: boolean; readonly source: FlagSource }
  /** SIGHUP of the pod: re-read the config, as a single process does on SIGHUP. */
  | { readonly kind: 'ktls-sidecar:reload' }
  /** SIGTERM of the pod: drain and exit 0. */
  | { readonly kind: 'ktls-sidecar:shutdown' };

/** What a worker tells the primary once its listener is open. */
export interface Hello {
  readonly kind: 'ktls-sidecar:hello';
  readonly listeners: readonly ListenerInfo[];
  readonly kernel: KernelProbeSummary;
  readonly demoCertificate?: string;
  /** The worker's flag: the primary corrects it when the pod's changed while the worker started. */
  readonly ktlsEnabled: boolean;
}

/** Worker → primary. */
export type FromWorker = Hello | { readonly kind: 'ktls-sidecar:reply'; readonly id: number; readonly body: unknown };

const TO_WORKER_KINDS: ReadonlySet<string> = new Set(['ktls-sidecar:metrics', 'ktls-sidecar:readiness', 'ktls-sidecar:flag', 'ktls-sidecar:reload', 'ktls-sidecar:shutdown']);

function kindOf(m: unknown): string | undefined {
  if (typeof m !== 'object' || m === null) return undefined;
  const kind = (m as { kind?: unknown }).kind;
  return typeof kind === 'string' ? kind : undefined;
}

export function isToWorker(m: unknown): m is ToWorker {
  return TO_WORKER_KINDS.has(kindOf(m) ?? '');
}

export function isFromWorker(m: unknown): m is FromWorker {
  const kind = kindOf(m);
  return kind === 'ktls-sidecar:hello' || kind === 'ktls-sidecar:reply';
}
