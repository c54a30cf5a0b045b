// Turning the kTLS flag off affects new connections through the decision.
// Live kTLS connections are handled here: a registry of them, each with a
// small hook its front implements, and a flag subscriber that asks them to
// wind down and, after `ktls.drainTimeout`, closes whatever is still open.
//
// What "drain" means per front (the front implements requestDrain()):
//   http1 — finish the in-flight response with `Connection: close`, close the
//           connection if idle;
//   h2    — send GOAWAY, let open streams finish;
//   tcp   — `ktls.drainOnDisable`: `close` asks the front to end (our
//           close_notify + FIN once its current data is through) and closes it
//           at the timeout; `keep` leaves it alone until it ends by itself.
// Re-enabling the flag before the timeout cancels the forced close (already
// requested drains still finish: a sent GOAWAY cannot be taken back).

import type { ConnectionProtocol, DrainAction } from '../vocabulary.js';
import type { KtlsFlag, KtlsFlagChange } from './flag.js';

/** What a drain hook winds down (every protocol of an open connection). */
export type DrainProtocol = Exclude<ConnectionProtocol, 'none'>;

/** What a front gives the registry for one live kTLS connection. */
export interface KtlsDrainTarget {
  readonly protocol: DrainProtocol;
  /**
   * Wind down gracefully (see the module comment). Called at most once per
   * flag flip; must not throw. Absent: the connection is only closed at the
   * timeout (or kept, for tcp with `keep`).
   */
  requestDrain?(): void;
  /** Close now (the drain timeout expired). Must be idempotent. */
  close(): void;
}

export interface DrainOptions {
  readonly drainOnDisable: 'close' | 'keep';
  /** ms before drained connections still open are closed. */
  readonly drainTimeout: number;
}

export interface DrainSummary {
  /** Connections asked to drain (and closed at the timeout if still open). */
  readonly draining: number;
  /** tcp connections left alone (`drainOnDisable: keep`). */
  readonly kept: number;
}

export interface DrainObserver {
  /** Per connection: `closed` = asked to drain/closed, `kept` = left open. */
  ktlsDrained?(action: DrainAction): void;
  /** A connection was still open at the timeout and was closed. */
  forcedClose?(target: KtlsDrainTarget): void;
  /** A front's hook threw (the connection is closed instead). */
  hookFailed?(err: unknown): void;
}

/** The live kTLS connections of this process. */
export class KtlsConnectionRegistry {
  private readonly live = new Set<KtlsDrainTarget>();
  private readonly draining = new Set<KtlsDrainTarget>();
  private timer: NodeJS.Timeout | null = null;

  /** Register a connection; call the returned function when it closes. */
  add(target: KtlsDrainTarget): () => void {
    this.live.add(target);
    return () => {
      this.live.delete(target);
      this.draining.delete(target);
    };
  }

  /** Register a connection and unregister it when `stream` emits 'close'. */
  track(stream: NodeJS.EventEmitter, target: KtlsDrainTarget): void {
    const remove = this.add(target);
    stream.once('close', remove);
  }

  get size(): number {
    return this.live.size;
  }

  /** Connections asked to drain and not closed yet. */
  get drainingCount(): number {
    return this.draining.size;
  }

  /**
   * Ask every live connection to drain; close the ones still open after
   * `drainTimeout`. A second call while a drain is pending re-arms the timer
   * and includes connections registered since.
   */
  drainAll(options: DrainOptions, observer: DrainObserver = {}): DrainSummary {
    let draining = 0;
    let kept = 0;
    for (const target of [...this.live]) {
      if (this.draining.has(target)) {
        draining++;
        continue;
      }
      if (target.protocol === 'tcp' && options.drainOnDisable === 'keep') {
        kept++;
        observer.ktlsDrained?.('kept');
        continue;
      }
      this.draining.add(target);
      draining++;
      observer.ktlsDrained?.('closed');
      try {
        target.requestDrain?.();
      } catch (err) {
        observer.hookFailed?.(err);
        this.forceClose(target, observer);
      }
    }
    this.cancelTimer();
    if (this.draining.size > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        for (const target of [...this.draining]) this.forceClose(target, observer);
      }, options.drainTimeout);
      // A pending drain must not keep the process alive on shutdown.
      this.timer.unref();
    }
    return { draining, kept };
  }

  /** The flag came back on: do not force-close; drains already requested finish on their own. */
  cancelDrain(): void {
    this.cancelTimer();
    this.draining.clear();
  }

  private cancelTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private forceClose(target: KtlsDrainTarget, observer: DrainObserver): void {
    this.draining.delete(target);
    if (!this.live.has(target)) return;
    observer.forcedClose?.(target);
    try {
      target.close();
    } catch (err) {
      observer.hookFailed?.(err);
    }
  }
}

/**
 * Subscribe the registry to the flag: on → off drains, off → on cancels the
 * forced close. `options` is read at each flip (so a SIGHUP reload of
 * drainTimeout / drainOnDisable applies). Returns the unsubscribe function.
 */
export function attachDrainToFlag(
  flag: Pick<KtlsFlag, 'subscribe'>,
  registry: KtlsConnectionRegistry,
  options: () => DrainOptions,
  observer: DrainObserver & { drainStarted?(summary: DrainSummary, change: KtlsFlagChange): void } = {},
): () => void {
  return flag.subscribe((change) => {
    if (change.previous.enabled && !change.current.enabled) {
      const summary = registry.drainAll(options(), observer);
      observer.drainStarted?.(summary, change);
    } else if (!change.previous.enabled && change.current.enabled) {
      registry.cancelDrain();
    }
  });
}
