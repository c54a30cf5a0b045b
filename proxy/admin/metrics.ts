// Every metric of the sidecar, declared once. Names, label names and label
// value sets are stable API, documented in docs/metrics.md (a test checks the
// two agree). Label values are closed sets: anything outside a set is counted
// as "other" so a bug can never explode the series count.

import { type Aggregator, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { KTLS_DIRECTIONS } from '../../native/crypto-info.js';
import {
  ADMIN_REFUSAL_REASONS,
  CLOSE_REASONS,
  CONNECTION_PROTOCOLS,
  CPU_MODES,
  DIRECTION_LABELS,
  DRAIN_ACTIONS,
  FLAG_SOURCES,
  HANDSHAKE_FAILURE_REASONS,
  HTTP_PROTOCOLS,
  INTERNAL_ERROR_KINDS,
  KEY_UPDATE_RESULTS,
  KTLS_REASONS,
  KTLS_STAGES,
  KTLS_STATES,
  OFFLOAD_KINDS,
  OFFLOAD_RESULTS,
  REJECT_REASONS,
  RELOAD_TRIGGERS,
  RESULTS,
  TLS_VERSION_LABELS,
  UPSTREAM_ERROR_REASONS,
  WORKER_RESTART_REASONS,
  oneOf,
} from '../vocabulary.js';
import type { ByteCounts, ConnectionLabels, ConnectionMetrics, SidecarEvents } from '../observe/events.js';
import { type HistogramChild, LeanHistogram } from './lean-histogram.js';
import type { StatusClass, WorkerRestartReason } from '../vocabulary.js';

export const METRIC_PREFIX = 'ktls_sidecar_';

/** errno names are a bounded kernel set; anything not errno-shaped (or our own markers) is `other`. */
function errnoLabel(v: string): string {
  return /^E[A-Z0-9]{1,15}$/.test(v) || v === 'UNKNOWN' ? v : 'other';
}

const CONNECTION_LABEL_NAMES = ['ktls', 'ktls_reason', 'tls_version', 'cipher', 'direction', 'protocol'] as const;

/** Cipher names are bounded by the configured lists; still, refuse anything that is not a suite-shaped name. */
function cipherLabel(v: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(v) ? v : 'other';
}

/** Normalise labels into the closed sets (out-of-set values become "other"). */
export function normalizeLabels(l: ConnectionLabels): ConnectionLabels {
  const ktls = oneOf(KTLS_STATES, l.ktls, 'off');
  return {
    ktls,
    ktls_reason: oneOf(KTLS_REASONS, l.ktls_reason, 'other'),
    tls_version: oneOf(TLS_VERSION_LABELS, l.tls_version, 'other'),
    cipher: cipherLabel(l.cipher),
    // A userspace connection has no kernel direction, whatever the caller said.
    direction: ktls === 'off' ? 'none' : oneOf(DIRECTION_LABELS, l.direction, 'none'),
    protocol: oneOf(CONNECTION_PROTOCOLS, l.protocol, 'none'),
  };
}

export function statusClass(status: number): StatusClass {
  const c = Math.floor(status / 100);
  return c >= 1 && c <= 5 ? (`${c}xx` as StatusClass) : 'other';
}

/** One HTTP request label set: requests not yet in the counter, and its duration histogram child. */
interface RequestCell {
  readonly counter: { inc(n?: number): void };
  n: number;
  readonly duration: HistogramChild;
}

function flushCount(cell: RequestCell): void {
  if (cell.n > 0) cell.counter.inc(cell.n);
  cell.n = 0;
}

interface Inc {
  inc(n: number): void;
}

/** One open connection's byte counts and how much of them the byte counters already have. */
interface PendingBytes {
  readonly rx: Inc;
  readonly tx: Inc;
  /** The spliced counters' children, resolved on the first spliced byte (most connections never splice). */
  readonly spliced: (dir: 'rx' | 'tx') => Inc;
  srx: Inc | null;
  stx: Inc | null;
  readonly counts: ByteCounts;
  in: number;
  out: number;
  splicedIn: number;
  splicedOut: number;
}

function flushPending(b: PendingBytes): void {
  const { bytesIn, bytesOut, splicedIn = 0, splicedOut = 0 } = b.counts;
  if (bytesIn > b.in) b.rx.inc(bytesIn - b.in);
  if (bytesOut > b.out) b.tx.inc(bytesOut - b.out);
  b.in = bytesIn;
  b.out = bytesOut;
  if (splicedIn > b.splicedIn) (b.srx ??= b.spliced('rx')).inc(splicedIn - b.splicedIn);
  if (splicedOut > b.splicedOut) (b.stx ??= b.spliced('tx')).inc(splicedOut - b.splicedOut);
  b.splicedIn = splicedIn;
  b.splicedOut = splicedOut;
}

export interface MetricsOptions {
  /** Registry to use; a fresh one by default (tests create many). */
  readonly registry?: Registry;
  /** Also collect prom-client's process/Node.js default metrics, under their standard names (default true). */
  readonly defaultMetrics?: boolean;
  /** Version for ktls_sidecar_build_info. */
  readonly version?: string;
  /** Empty pipes the splice pumps keep for reuse, read at each scrape (the native addon's count; 0 without it). */
  readonly splicePipesIdle?: () => number;
}

/**
 * prom-client's default metrics keep their standard names (no prefix), so stock
 * Node.js dashboards and alerts find them. How the primary of `workers: N`
 * folds them is prom-client's choice (sum; `min`/`max`/`first` where it set
 * one; the per-process start time is left out) except where that choice is
 * wrong for a pod: an averaged event-loop lag hides one stuck worker (max: the
 * slowest process).
 */
const POD_AGGREGATORS: Readonly<Record<string, Aggregator>> = {
  nodejs_eventloop_lag_seconds: 'max',
  nodejs_eventloop_lag_mean_seconds: 'max',
  nodejs_eventloop_lag_stddev_seconds: 'max',
  nodejs_eventloop_lag_p50_seconds: 'max',
  nodejs_eventloop_lag_p90_seconds: 'max',
  nodejs_eventloop_lag_p99_seconds: 'max',
};

function foldDefaultMetricsForPod(registry: Registry): void {
  for (const [name, aggregator] of Object.entries(POD_AGGREGATORS)) {
    // prom-client keeps a metric's aggregator as a plain field (its config), read when the registry is serialised.
    const metric = registry.getSingleMetric(name) as { aggregator?: Aggregator } | undefined;
    if (metric) metric.aggregator = aggregator;
  }
}

const REQUEST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const HANDSHAKE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The Prometheus adapter: every event becomes a series of `registry`. */
export interface SidecarMetrics extends SidecarEvents {
  readonly registry: Registry;
}

export function createMetrics(options: MetricsOptions = {}): SidecarMetrics {
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  const p = METRIC_PREFIX;
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    foldDefaultMetricsForPod(registry);
  }
  // Every series of the sidecar: the name (prefixed), its help and its label names.
  // `aggregator`: how the primary of `workers: N` folds the workers' values into one series (proxy/workers/;
  // prom-client's default is sum, right for counts of things each process does on its own).
  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], aggregator?: Aggregator) =>
    new Counter<L>({ name: p + name, help, labelNames, registers, ...(aggregator ? { aggregator } : {}) });
  const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], aggregator?: Aggregator) =>
    new Gauge<L>({ name: p + name, help, labelNames, registers, ...(aggregator ? { aggregator } : {}) });
  const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[]) =>
    new Histogram<L>({ name: p + name, help, buckets, labelNames, registers });

  const accepted = counter('connections_accepted_total', 'TCP connections accepted on the TLS listener, before limits, sniffing and the handshake.');
  const rejected = counter('connections_rejected_total', 'Connections refused before or during the handshake, by reason.', ['reason']);
  const opened = counter(
    'connections_opened_total',
    'Connections past the handshake with a record layer chosen (kernel or userspace).',
    CONNECTION_LABEL_NAMES,
  );
  const closed = counter('connections_closed_total', 'Opened connections that ended, by close reason.', [...CONNECTION_LABEL_NAMES, 'reason']);
  const active = gauge('connections_active', 'Opened connections not yet closed.', CONNECTION_LABEL_NAMES);
  // Bytes are read, never pushed: a scrape first adds what every open
  // connection moved since the last one (collect), a close adds its own rest;
  // no chunk on the hot path touches a series.
  const liveBytes = new Set<PendingBytes>();
  const flushBytes = (): void => {
    for (const b of liveBytes) flushPending(b);
  };
  const byteCounter = (name: string, help: string) =>
    new Counter({ name: p + name, help, labelNames: CONNECTION_LABEL_NAMES, registers, collect: flushBytes });
  const bytesReceived = byteCounter('bytes_received_total', 'Application (plaintext) bytes received from clients on opened connections.');
  const bytesSent = byteCounter('bytes_sent_total', 'Application (plaintext) bytes sent to clients on opened connections.');
  // Their spliced share: bytes that never entered JS.
  const bytesSplicedReceived = byteCounter(
    'bytes_spliced_received_total',
    'The part of bytes_received_total that a splice pump moved from the kernel TLS socket to the upstream: bytes that never entered JS.',
  );
  const bytesSplicedSent = byteCounter(
    'bytes_spliced_sent_total',
    'The part of bytes_sent_total that a splice pump moved from the upstream into the kernel TLS socket: bytes that never entered JS.',
  );
  // Pooled pipes (2 fds each) outlive their connections: process_open_fds − 2 × this is what connections hold.
  const splicePipesIdle = options.splicePipesIdle;
  new Gauge({
    name: `${p}splice_pipes_idle`,
    help: 'Empty pipes the splice pumps keep for reuse (2 fds each, at most 64 per process).',
    registers,
    collect(this: Gauge) {
      this.set(splicePipesIdle?.() ?? 0);
    },
  });
  const handshakes = counter('handshakes_total', 'Completed TLS handshakes.', ['tls_version', 'cipher', 'protocol']);
  const handshakeDuration = histogram('handshake_duration_seconds', 'Time from accept to a completed TLS handshake.', HANDSHAKE_BUCKETS, ['tls_version']);
  const handshakeFailures = counter('handshake_failures_total', 'TLS handshakes that failed, by reason.', ['reason']);
  // Per request: a plain add to the label set's cell (resolved once), flushed
  // into the counter at scrape; the duration histogram is a LeanHistogram.
  const requestCells = new Map<string, RequestCell>();
  const httpRequests = new Counter({
    name: `${p}http_requests_total`,
    help: 'HTTP requests answered, by protocol, status class and whether the connection was on kTLS.',
    labelNames: ['protocol', 'status_class', 'ktls'] as const,
    registers,
    collect: () => {
      for (const cell of requestCells.values()) flushCount(cell);
    },
  });
  const httpDuration = new LeanHistogram(
    `${p}http_request_duration_seconds`,
    'Time from request headers received to response finished.',
    REQUEST_BUCKETS,
    ['protocol', 'ktls'] as const,
    registers,
  );
  const upstreamErrors = counter('upstream_errors_total', 'Failures talking to the upstream, by reason.', ['reason']);
  // Every worker serves (and reloads) the same certificates: the pod reports the earliest expiry, and a reload once.
  const certExpiry = gauge('cert_expiry_timestamp_seconds', 'Expiry (notAfter) of each served certificate, Unix seconds.', ['servername', 'subject'], 'min');
  const certReloads = counter('cert_reloads_total', 'Certificate reloads, by result.', ['result'], 'max');
  const adminRefused = counter('admin_requests_refused_total', 'Admin requests refused: a change (not GET/HEAD) from a non-loopback peer.', ['reason']);
  // One reload and one flag for the pod: each worker applies the same one (max); the flag is 1 only where every process has it (min).
  const configReloads = counter('config_reloads_total', 'Configuration reloads, by result and trigger.', ['result', 'trigger'], 'max');
  const ktlsEnabled = gauge('ktls_enabled', 'The runtime kTLS flag: 1 = new connections may go to kernel TLS.', [], 'min');
  const flagChanges = counter('ktls_flag_changes_total', 'Changes of the runtime kTLS flag, by source.', ['source'], 'max');
  // Facts of the host and the binary, the same in every worker.
  const kernelAvailable = gauge('ktls_kernel_available', 'Kernel probe result: 1 = the kernel TLS ULP and the native addon are usable.', [], 'first');
  const keyUpdates = counter('ktls_key_updates_total', 'TLS 1.3 KeyUpdates on kTLS connections, by direction and result.', ['direction', 'result']);
  const drained = counter(
    'ktls_drained_connections_total',
    'Open kTLS connections when the flag turned off, by action (closed after ktls.drainTimeout, or kept).',
    ['action'],
  );
  const ktlsErrors = counter('ktls_errors_total', 'Failed kTLS syscalls and records that failed authentication, by errno name and stage.', ['errno', 'stage']);
  const offloads = counter(
    'ktls_offload_total',
    'kTLS installs per connection direction: attempted, then installed or failed; sw = kernel crypto, device = NIC.',
    ['result', 'direction', 'offload'],
  );
  const cpuByMode = counter(
    'process_cpu_seconds_by_mode_total',
    'Process CPU seconds (user + system) attributed to kTLS connections (on), userspace-TLS ones (off) or idle work (none).',
    ['ktls'],
  );
  for (const ktls of CPU_MODES) cpuByMode.inc({ ktls }, 0);
  const internalErrors = counter(
    'internal_errors_total',
    'Errors the process survived (uncaught exceptions, unhandled rejections) and engine connections left on TLS over a JS Duplex.',
    ['kind'],
  );
  for (const kind of INTERNAL_ERROR_KINDS) internalErrors.inc({ kind }, 0);
  const buildInfo = gauge('build_info', 'Always 1; labels carry the sidecar and Node versions.', ['version', 'node_version'], 'first');
  buildInfo.set({ version: options.version ?? 'unknown', node_version: process.version }, 1);
  ktlsEnabled.set(0);
  kernelAvailable.set(0);

  return {
    registry,
    connectionAccepted: () => accepted.inc(),
    connectionRejected: (reason) => rejected.inc({ reason: oneOf(REJECT_REASONS, reason, 'other') }),
    handshakeCompleted: ({ tlsVersion, cipher, protocol, durationSeconds }) => {
      const tls_version = oneOf(TLS_VERSION_LABELS, tlsVersion, 'other');
      handshakes.inc({ tls_version, cipher: cipherLabel(cipher), protocol: oneOf(CONNECTION_PROTOCOLS, protocol, 'none') });
      handshakeDuration.observe({ tls_version }, durationSeconds);
    },
    handshakeFailed: (reason) => handshakeFailures.inc({ reason: oneOf(HANDSHAKE_FAILURE_REASONS, reason, 'other') }),
    connectionOpened: (labels, counts): ConnectionMetrics => {
      const l = normalizeLabels(labels);
      opened.inc(l);
      const activeChild = active.labels(l);
      activeChild.inc();
      const spliced = (dir: 'rx' | 'tx'): Inc => (dir === 'rx' ? bytesSplicedReceived : bytesSplicedSent).labels(l);
      const pending: PendingBytes = { rx: bytesReceived.labels(l), tx: bytesSent.labels(l), spliced, srx: null, stx: null, counts, in: 0, out: 0, splicedIn: 0, splicedOut: 0 };
      liveBytes.add(pending);
      let done = false;
      return {
        labels: l,
        close(reason) {
          if (done) return;
          done = true;
          liveBytes.delete(pending);
          flushPending(pending);
          activeChild.dec();
          closed.inc({ ...l, reason: oneOf(CLOSE_REASONS, reason, 'other') });
        },
      };
    },
    httpRequest: ({ protocol, status, ktls, durationSeconds }) => {
      const key = `${protocol}|${ktls}|${status}`;
      let cell = requestCells.get(key);
      if (!cell) {
        const proto = oneOf(HTTP_PROTOCOLS, protocol, 'http1');
        const k = oneOf(KTLS_STATES, ktls, 'off');
        cell = {
          counter: httpRequests.labels({ protocol: proto, status_class: statusClass(status), ktls: k }),
          n: 0,
          duration: httpDuration.child({ protocol: proto, ktls: k }),
        };
        // Statuses are three digits (a few dozen in practice); the bound keeps a bug from growing the map.
        if (requestCells.size < 4096) requestCells.set(key, cell);
        else {
          cell.counter.inc();
          cell.duration.observe(durationSeconds);
          return;
        }
      }
      cell.n++;
      cell.duration.observe(durationSeconds);
    },
    upstreamError: (reason) => upstreamErrors.inc({ reason: oneOf(UPSTREAM_ERROR_REASONS, reason, 'other') }),
    setCertificates: (certs) => {
      certExpiry.reset();
      for (const c of certs) certExpiry.set({ servername: c.servername, subject: c.subject }, Math.floor(c.notAfter / 1000));
    },
    certReload: (result) => certReloads.inc({ result: oneOf(RESULTS, result, 'failure') }),
    adminRequestRefused: (reason) => adminRefused.inc({ reason: oneOf(ADMIN_REFUSAL_REASONS, reason, 'not_loopback') }),
    configReload: (result, trigger) =>
      configReloads.inc({ result: oneOf(RESULTS, result, 'failure'), trigger: oneOf(RELOAD_TRIGGERS, trigger, 'sighup') }),
    setKtlsEnabled: (enabled) => ktlsEnabled.set(enabled ? 1 : 0),
    ktlsFlagChanged: (source) => flagChanges.inc({ source: oneOf(FLAG_SOURCES, source, 'admin') }),
    setKernelAvailable: (available) => kernelAvailable.set(available ? 1 : 0),
    keyUpdate: (direction, result) => keyUpdates.inc({ direction, result: oneOf(KEY_UPDATE_RESULTS, result, 'failed') }),
    ktlsDrained: (action) => drained.inc({ action: oneOf(DRAIN_ACTIONS, action, 'kept') }),
    ktlsError: (errno, stage) => ktlsErrors.inc({ errno: errnoLabel(errno), stage: oneOf(KTLS_STAGES, stage, 'other') }),
    ktlsOffload: (result, direction, offload) =>
      offloads.inc({
        result: oneOf(OFFLOAD_RESULTS, result, 'failed'),
        direction: oneOf(KTLS_DIRECTIONS, direction, 'tx'),
        offload: oneOf(OFFLOAD_KINDS, offload, 'sw'),
      }),
    cpuSplit: (split) => {
      // Splits are never negative (splitInterval clamps); the guard keeps a bug from throwing in a timer.
      if (split.on > 0) cpuByMode.inc({ ktls: 'on' }, split.on);
      if (split.off > 0) cpuByMode.inc({ ktls: 'off' }, split.off);
      if (split.none > 0) cpuByMode.inc({ ktls: 'none' }, split.none);
    },
    internalError: (kind) => internalErrors.inc({ kind: oneOf(INTERNAL_ERROR_KINDS, kind, 'uncaught_exception') }),
  };
}


/** What the primary of `workers: N` reports about its workers (proxy/workers/primary.ts). */
export interface PrimaryMetrics {
  workers(configured: number, running: number): void;
  workerRestarted(reason: WorkerRestartReason): void;
  /** Workers left out of one /metrics answer because they did not answer in time. */
  scrapeMissed(workers: number): void;
}

/** The primary's own series, on the registry it aggregates the workers' into (only the primary has them). */
export function createPrimaryMetrics(registry: Registry): PrimaryMetrics {
  const registers = [registry];
  const workers = new Gauge({
    name: `${METRIC_PREFIX}workers`,
    help: 'Worker processes (workers: N): configured, and running (started and not exited).',
    labelNames: ['state'] as const,
    registers,
  });
  const restarts = new Counter({
    name: `${METRIC_PREFIX}worker_restarts_total`,
    help: 'Workers that exited unexpectedly and were replaced, by how they ended (exit, signal).',
    labelNames: ['reason'] as const,
    registers,
  });
  for (const reason of WORKER_RESTART_REASONS) restarts.inc({ reason }, 0);
  const missed = new Counter({
    name: `${METRIC_PREFIX}worker_scrape_misses_total`,
    help: 'Workers left out of a /metrics answer of the primary because they did not answer within the scrape timeout.',
    registers,
  });
  return {
    workers: (configured, running) => {
      workers.set({ state: 'configured' }, configured);
      workers.set({ state: 'running' }, running);
    },
    workerRestarted: (reason) => restarts.inc({ reason: oneOf(WORKER_RESTART_REASONS, reason, 'exit') }),
    scrapeMissed: (n) => {
      if (n > 0) missed.inc(n);
    },
  };
}
