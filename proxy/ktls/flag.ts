// The runtime kTLS flag: one boolean with subscribers. PUT /ktls, SIGHUP and
// the config-file watch set it; the decision reads `enabled` for each new
// connection; the tcp drain logic subscribes. Every change is logged with its
// source and mirrored in the ktls_sidecar_ktls_enabled gauge.

import type { FlagSource } from '../vocabulary.js';

/** What the flag reports on every change (the metrics adapter implements it). */
export interface FlagObserver {
  setKtlsEnabled(enabled: boolean): void;
  ktlsFlagChanged(source: FlagSource): void;
}

export interface KtlsFlagState {
  readonly enabled: boolean;
  /** Who set the current value. */
  readonly source: FlagSource;
  /** When the current value was set (ISO 8601). */
  readonly changedAt: string;
  /** Number of changes since startup (the startup value is not a change). */
  readonly changes: number;
}

export interface KtlsFlagChange {
  readonly previous: KtlsFlagState;
  readonly current: KtlsFlagState;
}

/** The part of a pino logger the flag uses (keeps this module free of a pino dependency). */
export interface FlagLogger {
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface KtlsFlag {
  /** The current value; cheap, read on every new connection. */
  readonly enabled: boolean;
  state(): KtlsFlagState;
  /**
   * Set the flag. Setting the value it already has changes nothing and
   * notifies no one (returns `changed: false`).
   */
  set(enabled: boolean, source: FlagSource): { changed: boolean; state: KtlsFlagState };
  /** Called after every change, in subscription order; returns the unsubscribe function. */
  subscribe(listener: (change: KtlsFlagChange) => void): () => void;
}

export interface KtlsFlagOptions {
  readonly enabled: boolean;
  readonly logger?: FlagLogger;
  readonly metrics?: FlagObserver;
  /** Clock, for tests that check changedAt. */
  readonly now?: () => Date;
}

export function createKtlsFlag(options: KtlsFlagOptions): KtlsFlag {
  const now = options.now ?? (() => new Date());
  let state: KtlsFlagState = { enabled: options.enabled, source: 'startup', changedAt: now().toISOString(), changes: 0 };
  const listeners = new Set<(change: KtlsFlagChange) => void>();
  options.metrics?.setKtlsEnabled(state.enabled);
  options.logger?.info({ ktls_enabled: state.enabled, source: 'startup' }, 'ktls flag initialised');

  return {
    get enabled() {
      return state.enabled;
    },
    state: () => state,
    set(enabled, source) {
      if (enabled === state.enabled) {
        options.logger?.debug({ ktls_enabled: enabled, source }, 'ktls flag unchanged');
        return { changed: false, state };
      }
      const previous = state;
      state = { enabled, source, changedAt: now().toISOString(), changes: previous.changes + 1 };
      options.metrics?.setKtlsEnabled(enabled);
      options.metrics?.ktlsFlagChanged(source);
      options.logger?.info(
        { ktls_enabled: enabled, previous: previous.enabled, source, changed_at: state.changedAt },
        `ktls flag ${enabled ? 'enabled' : 'disabled'} by ${source}`,
      );
      const change = { previous, current: state };
      // Snapshot: a listener that unsubscribes (or subscribes) during the
      // notification does not change who hears about this change.
      for (const listener of [...listeners]) {
        try {
          listener(change);
        } catch (err) {
          // One broken subscriber must not stop the others or the flip itself.
          options.logger?.error({ err }, 'ktls flag subscriber failed');
        }
      }
      return { changed: true, state };
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
}
