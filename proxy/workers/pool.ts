// The primary's workers: forks N processes that each run today's Sidecar on the
// same listen address, replaces one that exits unexpectedly (small backoff; a
// crash loop ends the pod), asks them over IPC (metrics, readiness, flag) with a
// timeout, and drains them on shutdown.
//
// Listener sharing: SCHED_NONE. Every worker accepts from the one listening
// socket the primary bound and handed out; the kernel spreads the accepts and no
// connection crosses IPC. Not SCHED_RR (Node's default on Linux): there the
// primary accepts every connection and passes its fd to a worker, one IPC message
// per connection and one process every accept waits on. Per-worker
// SO_REUSEPORT sockets (`reusePort`, Node >= 22.12) are not used: the one
// shared socket keeps the primary's bind, drain and replacement as they are.

import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { KtlsFlag } from '../ktls/flag.js';
import type { Readiness, ReadinessCheck } from '../readiness.js';
import type { FlagSource, WorkerRestartReason } from '../vocabulary.js';
import { type FromWorker, type Hello, type ToWorker, isFromWorker } from './messages.js';
import { POD_FLAG_ENV } from './worker.js';

/** How a replaced worker ended: by itself (any exit code) or by a signal (kill -9, the OOM killer). */

/** What the pool reports (the Prometheus adapter's primary metrics implement it). */
export interface PoolObserver {
  workers(configured: number, running: number): void;
  workerRestarted(reason: WorkerRestartReason): void;
  scrapeMissed(workers: number): void;
}

export interface PoolOptions {
  readonly count: number;
  readonly logger: Logger;
  /** The pod's flag (the primary's): a new worker starts with its value. */
  readonly flag: KtlsFlag;
  /** The primary's own registry, aggregated with the workers'. */
  readonly registry: Registry;
  readonly observer: PoolObserver;
  /** A crash loop: more than CRASH_LIMIT unexpected exits within CRASH_WINDOW_MS. */
  readonly onCrashLoop: () => void;
}

/** Waits for one IPC answer. Readiness is asked within the kubelet's default 1 s probe timeout. */
export const READINESS_TIMEOUT_MS = 800;
export const SCRAPE_TIMEOUT_MS = 2000;
export const FLAG_TIMEOUT_MS = 2000;
/** More unexpected exits than this within the window: the pod is broken, let Kubernetes see it. */
export const CRASH_LIMIT = 5;
export const CRASH_WINDOW_MS = 60_000;
/** Shutdown waits the drain timeout plus this, then kills what is left. */
const SHUTDOWN_MARGIN_MS = 5000;
const STARTUP_TIMEOUT_MS = 60_000;

interface Pending {
  readonly worker: number;
  readonly resolve: (body: unknown) => void;
  readonly timer: NodeJS.Timeout;
}

export class WorkerPool {
  /** Forked and not exited, by cluster id. */
  private readonly running = new Map<number, Worker>();
  /** Those that said hello (listening): the ones asked and counted. */
  private readonly serving = new Set<number>();
  private readonly pending = new Map<number, Pending>();
  private readonly crashes: number[] = [];
  private readonly respawns = new Set<NodeJS.Timeout>();
  /** Forks still to make, and the worker forked and not yet listening (one at a time, see pump()). */
  private wanted = 0;
  private startingId: number | undefined;
  private nextRequest = 1;
  private started = false;
  private stopping = false;
  private onStartupHello: ((hello: Hello) => void) | undefined;
  private onStartupExit: ((err: Error) => void) | undefined;

  constructor(private readonly opts: PoolOptions) {}

  /** Workers forked and not exited. */
  get runningCount(): number {
    return this.running.size;
  }

  /** Fork every worker; resolves with the first hello once all are listening, rejects if one exits first. */
  start(): Promise<Hello> {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    return new Promise<Hello>((resolve, reject) => {
      let first: Hello | undefined;
      let hellos = 0;
      const timer = setTimeout(() => fail(new Error(`workers not listening within ${STARTUP_TIMEOUT_MS} ms`)), STARTUP_TIMEOUT_MS);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        this.onStartupHello = this.onStartupExit = undefined;
        reject(err);
      };
      this.onStartupHello = (hello) => {
        first ??= hello;
        if (++hellos < this.opts.count) return;
        clearTimeout(timer);
        this.onStartupHello = this.onStartupExit = undefined;
        this.started = true;
        resolve(first);
      };
      this.onStartupExit = fail;
      this.wanted = this.opts.count;
      this.pump();
    });
  }

  /**
   * Fork the next wanted worker once the previous one listens. One at a time:
   * each worker's startup kernel probe listens on 127.0.0.1 port 0, and in a
   * cluster worker a listen goes through the primary, which hands every worker
   * asking for the same address and port the same socket: two workers probing at
   * once could accept each other's probe connections and wait forever.
   */
  private pump(): void {
    if (this.stopping || this.startingId !== undefined || this.wanted === 0) return;
    this.wanted--;
    const worker = cluster.fork({ [POD_FLAG_ENV]: this.opts.flag.enabled ? '1' : '0' });
    this.startingId = worker.id;
    this.running.set(worker.id, worker);
    this.report();
    worker.on('message', (m: unknown) => {
      if (isFromWorker(m)) this.onMessage(worker, m);
    });
    worker.on('exit', (code: number | null, signal: string | null) => this.onExit(worker, code, signal));
  }

  private onMessage(worker: Worker, m: FromWorker): void {
    if (m.kind === 'ktls-sidecar:reply') {
      const p = this.pending.get(m.id);
      if (!p) return; // answered after its timeout
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m.body);
      return;
    }
    this.serving.add(worker.id);
    if (this.startingId === worker.id) this.startingId = undefined;
    // Forked before a shutdown and listening only now: the shutdown message may have come before its handler.
    if (this.stopping) this.post(worker, { kind: 'ktls-sidecar:shutdown' });
    this.opts.logger.info({ event: 'worker_listening', worker: worker.id, pid: worker.process.pid }, `worker ${worker.id} listening`);
    // The pod's flag changed between the fork and this hello: the worker missed the broadcast.
    if (m.ktlsEnabled !== this.opts.flag.enabled) void this.ask(worker, (id) => ({ kind: 'ktls-sidecar:flag', id, enabled: this.opts.flag.enabled, source: this.opts.flag.state().source }), FLAG_TIMEOUT_MS);
    this.onStartupHello?.(m);
    this.pump();
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    this.running.delete(worker.id);
    this.serving.delete(worker.id);
    if (this.startingId === worker.id) this.startingId = undefined;
    for (const [id, p] of this.pending) {
      if (p.worker !== worker.id) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve(undefined);
    }
    this.report();
    if (this.stopping) return;
    if (!this.started) {
      this.onStartupExit?.(new Error(`worker ${worker.id} exited before listening (${signal ? `signal ${signal}` : `code ${code}`})`));
      return;
    }
    const now = Date.now();
    this.crashes.push(now);
    while (this.crashes.length > 0 && now - (this.crashes[0] ?? now) >= CRASH_WINDOW_MS) this.crashes.shift();
    this.opts.observer.workerRestarted(signal ? 'signal' : 'exit');
    if (this.crashes.length > CRASH_LIMIT) {
      this.opts.logger.fatal(
        { event: 'worker_crash_loop', worker: worker.id, code, signal, exits: this.crashes.length, window_ms: CRASH_WINDOW_MS },
        `more than ${CRASH_LIMIT} workers exited within ${CRASH_WINDOW_MS} ms: exiting to be restarted`,
      );
      this.opts.onCrashLoop();
      return;
    }
    // 100 ms, doubling with each recent exit, at most 2 s: a worker that dies at once does not spin.
    const delay = Math.min(2000, 100 * 2 ** (this.crashes.length - 1));
    this.opts.logger.error({ event: 'worker_exit', worker: worker.id, code, signal, restart_in_ms: delay }, `worker ${worker.id} exited unexpectedly; starting a new one`);
    const t = setTimeout(() => {
      this.respawns.delete(t);
      this.wanted++;
      this.pump();
    }, delay);
    this.respawns.add(t);
  }

  private report(): void {
    this.opts.observer.workers(this.opts.count, this.running.size);
  }

  /** Send one request; resolves with the reply's body, or undefined when none came within `timeoutMs`. */
  private ask(worker: Worker, make: (id: number) => ToWorker, timeoutMs: number): Promise<unknown> {
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.pending.set(id, { worker: worker.id, resolve, timer });
      this.post(worker, make(id));
    });
  }

  private post(worker: Worker, message: ToWorker): void {
    // A worker between exit and its 'exit' event has a closed channel: the request times out instead.
    if (worker.isConnected()) worker.send(message, undefined, () => undefined);
  }

  private servingWorkers(): Worker[] {
    return [...this.serving].map((id) => this.running.get(id)).filter((w): w is Worker => w !== undefined);
  }

  /** GET /healthz for the pod. */
  health(): { ok: boolean; running: number } {
    return { ok: this.serving.size > 0, running: this.serving.size };
  }

  /** One exposition: every worker that answered in time, and the primary's own registry (sum over processes, or each metric's aggregator). */
  async metrics(): Promise<{ text: string; contentType: string }> {
    const workers = this.servingWorkers();
    const answers = await Promise.all(workers.map((w) => this.ask(w, (id) => ({ kind: 'ktls-sidecar:metrics', id }), SCRAPE_TIMEOUT_MS)));
    const got = answers.filter((a): a is object[] => Array.isArray(a));
    this.opts.observer.scrapeMissed(workers.length - got.length);
    // The primary's last: `first` takes a worker's value (the primary has no kernel probe of its own).
    const aggregated = AggregatorRegistry.aggregate([...got, await this.opts.registry.getMetricsAsJSON()]);
    return { text: await aggregated.metrics(), contentType: aggregated.contentType };
  }

  /** Ready when every configured worker is running, listening and answers ready in time. */
  async readiness(): Promise<Readiness> {
    const workers = this.servingWorkers();
    const answers = await Promise.all(workers.map((w) => this.ask(w, (id) => ({ kind: 'ktls-sidecar:readiness', id }), READINESS_TIMEOUT_MS)));
    const checks: ReadinessCheck[] = [
      { name: 'workers_serving', ok: workers.length >= this.opts.count, detail: `${workers.length} of ${this.opts.count}` },
    ];
    workers.forEach((w, i) => {
      const r = answers[i] as Readiness | undefined;
      const failing = r?.checks.filter((c) => !c.ok).map((c) => c.name) ?? [];
      const detail = r === undefined ? `no answer within ${READINESS_TIMEOUT_MS} ms` : failing.length > 0 ? `failing: ${failing.join(', ')}` : undefined;
      checks.push({ name: `worker_${w.id}`, ok: r?.ready === true, ...(detail ? { detail } : {}) });
    });
    return { ready: checks.every((c) => c.ok), checks };
  }

  /** Send the pod's flag to every worker; resolves once each applied it or the wait ended. */
  async broadcastFlag(enabled: boolean, source: FlagSource): Promise<{ workers: number; acked: number }> {
    const workers = this.servingWorkers();
    const acks = await Promise.all(workers.map((w) => this.ask(w, (id) => ({ kind: 'ktls-sidecar:flag', id, enabled, source }), FLAG_TIMEOUT_MS)));
    return { workers: workers.length, acked: acks.filter((a) => a !== undefined).length };
  }

  /** SIGHUP of the pod: every worker reloads its config. */
  reload(): void {
    for (const w of this.running.values()) this.post(w, { kind: 'ktls-sidecar:reload' });
  }

  /**
   * Every worker drains (its own shutdown) and exits; after `drainTimeoutMs` +
   * a margin, those still running are killed. Resolves when all have exited.
   */
  async shutdown(drainTimeoutMs: number): Promise<void> {
    this.stopping = true;
    for (const t of this.respawns) clearTimeout(t);
    this.respawns.clear();
    const exits = [...this.running.values()].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    for (const w of this.running.values()) this.post(w, { kind: 'ktls-sidecar:shutdown' });
    const all = Promise.all(exits).then(() => true);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), drainTimeoutMs + SHUTDOWN_MARGIN_MS)));
    const inTime = await Promise.race([all, late]);
    clearTimeout(timer);
    if (inTime) return;
    for (const w of this.running.values()) {
      this.opts.logger.error({ event: 'worker_kill', worker: w.id }, `worker ${w.id} did not finish draining in time: killed`);
      w.process.kill('SIGKILL');
    }
    await all;
  }

  /** Crash loop or failed start: end every worker now (they drain only on an orderly shutdown). */
  killAll(): void {
    this.stopping = true;
    for (const t of this.respawns) clearTimeout(t);
    for (const w of this.running.values()) w.process.kill('SIGKILL');
  }
}
