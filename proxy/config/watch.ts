// Watch the --config file and report each new version (config.watch).
//
// Polling, not fs.watch: Kubernetes updates a mounted ConfigMap by swapping a
// symlink, which inotify on the file misses, while stat() follows the link
// and sees the new inode/mtime. Not fs.watchFile either: it takes its baseline
// stat asynchronously, so a change made right after start could be missed.
// Here the baseline is taken synchronously, a change is acted on only once the
// file's stat has been stable for one interval (so a half-written file is not
// loaded), and a change whose bytes equal the last seen version is ignored.

import { createHash } from 'node:crypto';
import { statSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { ConfigError } from '../errors.js';
import { readConfiguredFile } from '../tls/certs.js';
import { reloadConfig, type LoadedConfig } from './load.js';

export interface WatchOptions {
  /** Poll interval in ms (default 1000). */
  readonly intervalMs?: number;
  /** A valid new config (the caller applies ktls.enabled from it with source `config_watch`). */
  readonly onChange: (next: LoadedConfig) => void;
  /** The file changed but does not load; the previous config stays in force. */
  readonly onError: (err: ConfigError) => void;
  /** Keep the process alive while watching (default false: the listeners do that). */
  readonly persistent?: boolean;
}

export interface ConfigWatcher {
  /** The config the watcher compares against (the last valid one). */
  readonly current: LoadedConfig;
  close(): void;
}

function digest(path: string): string | undefined {
  try {
    // The same capped, type-checked read as at startup: a FIFO or an endless file never blocks the watch.
    return createHash('sha256').update(readConfiguredFile('--config', path)).digest('hex');
  } catch {
    return undefined;
  }
}

function statKey(s: Stats | undefined): string {
  return s ? `${s.ino}:${s.size}:${s.mtimeMs}` : 'missing';
}

function statSyncOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** Start watching `initial.file`; returns null when the config has no file. */
export function watchConfigFile(initial: LoadedConfig, options: WatchOptions): ConfigWatcher | null {
  const file = initial.file;
  if (file === null) return null;
  let current = initial;
  let lastDigest = digest(file);
  let lastKey = statKey(statSyncOrUndefined(file));
  /** The stat seen on the previous poll when it differed from lastKey (waiting to be stable). */
  let pendingKey: string | undefined;
  let polling = false;
  let closed = false;

  const poll = async (): Promise<void> => {
    if (polling || closed) return;
    polling = true;
    try {
      const key = statKey(await stat(file).catch(() => undefined));
      if (closed) return;
      if (key === lastKey) {
        pendingKey = undefined;
        return;
      }
      if (key !== pendingKey) {
        pendingKey = key; // changed: act when it looks the same on the next poll
        return;
      }
      pendingKey = undefined;
      lastKey = key;
      const d = digest(file);
      if (d === undefined || d === lastDigest) return;
      lastDigest = d;
      const next = reloadConfig(current);
      if (next instanceof Error) {
        options.onError(next);
        return;
      }
      current = next;
      options.onChange(next);
    } finally {
      polling = false;
    }
  };

  const timer = setInterval(() => void poll(), options.intervalMs ?? 1000);
  if (!options.persistent) timer.unref();
  return {
    get current() {
      return current;
    },
    close() {
      closed = true;
      clearInterval(timer);
    },
  };
}
