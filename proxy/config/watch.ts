// Watch the --config file and report each new version (config.watch). Polling
// with fs.watchFile, not fs.watch: Kubernetes updates a mounted ConfigMap by
// swapping a symlink, which inotify on the file misses, while stat() follows
// the link and sees the new mtime. A change whose bytes are the same as the
// last seen version is ignored, so touching the file reloads nothing.

import { createHash } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import type { ConfigError } from '../errors.js';
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
    return createHash('sha256').update(readFileSync(path)).digest('hex');
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
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size && curr.ino === prev.ino) return;
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
  };
  watchFile(file, { interval: options.intervalMs ?? 1000, persistent: options.persistent ?? false }, listener);
  return {
    get current() {
      return current;
    },
    close() {
      unwatchFile(file, listener);
    },
  };
}
