// The worker's side of `workers: N`: a worker runs today's Sidecar unchanged and
// answers the primary over IPC — its metrics (the primary aggregates them), its
// readiness, the pod's flag, reload and shutdown. It has no admin server and no
// config watch: the primary has those for the pod.

import cluster from 'node:cluster';
import type { Registry } from 'prom-client';
import type { KtlsFlag } from '../ktls/flag.js';
import type { Readiness } from '../readiness.js';
import { type Hello, type ToWorker, isToWorker } from './messages.js';

/**
 * The pod's flag when the primary forked this worker. Not a KTLS_SIDECAR_ variable:
 * the config loader would take it as a config key (and a reload would re-apply it).
 */
export const POD_FLAG_ENV = 'KTLS_WORKER_KTLS_ENABLED';

/** This process's worker id (node:cluster's), or undefined when it is not a worker. */
export function workerId(): number | undefined {
  return cluster.isWorker ? cluster.worker?.id : undefined;
}

/** The flag a worker starts with: the pod's current value (a replacement must not go back to the config's). */
export function podFlagAtStart(env: NodeJS.ProcessEnv, configured: boolean): boolean {
  const v = env[POD_FLAG_ENV];
  return v === '1' ? true : v === '0' ? false : configured;
}

export interface WorkerSide {
  readonly registry: Registry;
  readonly flag: KtlsFlag;
  readiness(): Promise<Readiness>;
  /** Today's SIGHUP reload. */
  reload(): void;
  /** Today's SIGTERM: drain, then the process exits 0. */
  stop(): void;
}

function send(message: unknown): void {
  // The callback swallows a closed channel: the primary is gone and this worker is exiting anyway.
  process.send?.(message, undefined, undefined, () => undefined);
}

/** Answer the primary's messages, then say hello; returns the function that stops answering. */
export function attachToPrimary(side: WorkerSide, hello: Omit<Hello, 'kind' | 'ktlsEnabled'>): () => void {
  const reply = (id: number, body: unknown): void => send({ kind: 'ktls-sidecar:reply', id, body });
  const onMessage = (m: unknown): void => {
    if (!isToWorker(m)) return;
    handle(m);
  };
  const handle = (m: ToWorker): void => {
    switch (m.kind) {
      case 'ktls-sidecar:metrics':
        side.registry.getMetricsAsJSON().then(
          (body) => reply(m.id, body),
          // No answer: the primary counts this worker as missing from the scrape.
          () => undefined,
        );
        return;
      case 'ktls-sidecar:readiness':
        side.readiness().then(
          (r) => reply(m.id, r),
          (err: unknown) => reply(m.id, { ready: false, checks: [{ name: 'readiness', ok: false, detail: (err as Error).message }] }),
        );
        return;
      case 'ktls-sidecar:flag':
        side.flag.set(m.enabled, m.source);
        reply(m.id, { enabled: side.flag.enabled });
        return;
      case 'ktls-sidecar:reload':
        side.reload();
        return;
      case 'ktls-sidecar:shutdown':
        side.stop();
        return;
    }
  };
  process.on('message', onMessage);
  send({ kind: 'ktls-sidecar:hello', ...hello, ktlsEnabled: side.flag.enabled } satisfies Hello);
  return () => {
    process.off('message', onMessage);
  };
}
