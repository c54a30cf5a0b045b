// The primary process of `workers: N` (N > 1): it proxies nothing. It starts the
// workers (pool.ts), serves the admin port for the pod (health, readiness and
// metrics of all workers, one kTLS flag), and owns what a single process does on
// its own: the config watch and SIGHUP (forwarded: every worker reloads, flag
// changes are broadcast), and SIGTERM/SIGINT (every worker drains, then exit 0).
// Certificate watching stays in each worker, next to the contexts it reloads.

import os from 'node:os';
import { type LoadedConfig, reloadConfig, watchConfigFile } from '../config/index.js';
import type { KtlsFlag } from '../ktls/flag.js';
import { type Logger, logStartupSummary } from '../log.js';
import type { Readiness } from '../readiness.js';
import type { ReloadTrigger, Result } from '../vocabulary.js';
import { type PoolObserver, WorkerPool } from './pool.js';
import type { Registry } from 'prom-client';

/** What the admin server asks the primary (admin/server.ts PodAdmin has this shape). */
export interface PodHooks {
  health(): { ok: boolean; running: number };
  metrics(): Promise<{ text: string; contentType: string }>;
  broadcastFlag(enabled: boolean): Promise<{ workers: number; acked: number }>;
}

export interface PrimaryOptions {
  readonly config: LoadedConfig;
  readonly count: number;
  readonly logger: Logger;
  readonly flag: KtlsFlag;
  /** The primary's own registry (process metrics, flag, reloads, workers), aggregated with the workers'. */
  readonly registry: Registry;
  readonly observer: PoolObserver;
  readonly configReload: (result: Result, trigger: ReloadTrigger) => void;
  /** Start the admin server with these hooks (the composition root owns the adapter). */
  readonly startAdmin: (pod: PodHooks, readiness: () => Promise<Readiness>) => Promise<{ host: string; port: number; close(): Promise<void> }>;
}

/** Run the pod; resolves with the exit code (0 after a drain, 1 when it cannot start or the workers crash-loop). */
export async function runPrimary(o: PrimaryOptions): Promise<number> {
  const { logger, flag } = o;
  let crashLoop: (() => void) | undefined;
  const pool = new WorkerPool({ count: o.count, logger, flag, registry: o.registry, observer: o.observer, onCrashLoop: () => crashLoop?.() });

  let hello;
  try {
    hello = await pool.start();
  } catch (err) {
    logger.fatal({ err }, 'cannot start');
    pool.killAll();
    return 1;
  }
  const pod: PodHooks = {
    health: () => pool.health(),
    metrics: () => pool.metrics(),
    broadcastFlag: (enabled) => pool.broadcastFlag(enabled, 'admin'),
  };
  let admin: Awaited<ReturnType<PrimaryOptions['startAdmin']>>;
  try {
    admin = await o.startAdmin(pod, () => pool.readiness());
  } catch (err) {
    logger.fatal({ err }, 'cannot start');
    await pool.shutdown(o.config.shutdown.drainTimeout);
    return 1;
  }
  const tls = hello.listeners.filter((l) => l.name === 'tls');
  const others = hello.listeners.filter((l) => l.name !== 'tls');
  logStartupSummary(logger.child({ workers: o.count }), {
    config: o.config,
    listeners: [...tls, { name: 'admin', address: `${admin.host}:${admin.port}` }, ...others],
    kernel: hello.kernel,
    demoCertificate: hello.demoCertificate,
  });

  let current = o.config;
  const watcher = o.config.config.watch
    ? watchConfigFile(o.config, {
        onChange: (next) => {
          flag.set(next.ktls.enabled, 'config_watch');
          o.configReload('success', 'config_watch');
          void pool.broadcastFlag(next.ktls.enabled, 'config_watch');
        },
        onError: (err) => {
          o.configReload('failure', 'config_watch');
          logger.warn({ event: 'config_reload', trigger: 'config_watch', err }, 'config file change rejected; keeping the running config');
        },
      })
    : null;

  // The primary re-reads the file too: it holds the pod's flag and its own log level.
  // A file it rejects is rejected by every worker as well: not forwarded.
  const reload = (): void => {
    const next = reloadConfig(current);
    if (next instanceof Error) {
      o.configReload('failure', 'sighup');
      logger.error({ event: 'config_reload', trigger: 'sighup', err: next }, 'SIGHUP: new config rejected; keeping the running config');
      return;
    }
    if (workerCount(next.workers) !== o.count) {
      logger.warn({ event: 'config_reload', keys: ['workers'] }, 'workers changed: takes effect after a restart');
    }
    current = next;
    logger.level = next.log.level;
    flag.set(next.ktls.enabled, 'sighup');
    o.configReload('success', 'sighup');
    pool.reload();
    logger.info({ event: 'config_reload', trigger: 'sighup', result: 'forwarded', workers: pool.runningCount }, 'SIGHUP: config reloaded; every worker reloads');
  };

  return new Promise<number>((resolve) => {
    let stopping = false;
    const finish = (code: number): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      process.off('SIGHUP', reload);
      watcher?.close();
      void admin.close().then(
        () => resolve(code),
        () => resolve(code),
      );
    };
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'already draining');
        return;
      }
      stopping = true;
      logger.info({ signal, event: 'shutdown', workers: pool.runningCount }, `${signal}: stopping; every worker drains`);
      void pool.shutdown(current.shutdown.drainTimeout).then(() => {
        logger.info({ event: 'exit', code: 0 }, 'stopped');
        finish(0);
      });
    };
    crashLoop = () => {
      if (stopping) return;
      stopping = true;
      pool.killAll();
      finish(1);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', reload);
  });
}

/** `workers` as configured → processes: `auto` is one per CPU this process may use (at least 1). */
export function workerCount(setting: number | 'auto', available: () => number = os.availableParallelism): number {
  return setting === 'auto' ? Math.max(1, available()) : setting;
}
