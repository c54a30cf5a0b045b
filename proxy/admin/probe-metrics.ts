// The Prometheus view of the startup kernel probe, and the kernel's own TLS
// counters (/proc/net/tls_stat) read at scrape time. An adapter like
// metrics.ts: the composition root registers it on the registry metrics.ts
// owns, once the probe has run.
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { KernelProbe } from '../ktls/probe.js';
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS } from '../../native/crypto-info.js';
import { TLS_STAT_PATH, type TlsStat, readTlsStatSync } from '../ktls/tls-stat.js';

export interface ProbeMetricsOptions {
  /** Where the counters are read from (tests). */
  tlsStatPath?: string;
}

/** /proc/net/tls_stat rows that count sockets open now (a gauge); every other row counts events since boot. */
function isSocketGauge(stat: string): boolean {
  return stat.startsWith('TlsCurr');
}

/**
 * Keeps a counter equal to the kernel's value: adds the increase since the last
 * read; a value below the last one (the tls module was reloaded: the kernel
 * started from 0) restarts the series at the new value, which Prometheus reads
 * as a counter reset, never as a negative increase.
 */
function followKernelCounters(counter: Counter<'stat'>): (stat: TlsStat | null) => void {
  const last = new Map<string, number>();
  return (stat) => {
    if (stat === null) {
      counter.reset();
      last.clear();
      return;
    }
    for (const name of last.keys()) {
      if (!(name in stat)) {
        counter.remove({ stat: name });
        last.delete(name);
      }
    }
    for (const [name, value] of Object.entries(stat)) {
      if (isSocketGauge(name)) continue;
      const before = last.get(name);
      if (before !== undefined && value < before) counter.remove({ stat: name });
      counter.inc({ stat: name }, before === undefined || value < before ? value : value - before);
      last.set(name, value);
    }
  };
}

export function registerProbeMetrics(registry: Registry, probe: KernelProbe, opts: ProbeMetricsOptions = {}): void {
  const statPath = opts.tlsStatPath ?? TLS_STAT_PATH;

  const cipher = new Gauge({
    name: 'ktls_sidecar_kernel_cipher_supported',
    help: 'Whether the kernel accepted this cipher for this TLS version and direction at startup (1) or not (0).',
    labelNames: ['cipher', 'version', 'direction'] as const,
    registers: [registry],
    // One kernel per pod: with workers: N every worker reports the same fact.
    aggregator: 'first',
  });
  for (const version of TLS_VERSIONS) {
    for (const c of KERNEL_CIPHERS) {
      for (const direction of KTLS_DIRECTIONS) {
        cipher.set({ cipher: c, version, direction }, probe.supports(version, c, direction) ? 1 : 0);
      }
    }
  }

  new Gauge({
    name: 'ktls_sidecar_kernel_rekey_supported',
    help: 'Whether the kernel accepts a new TLS 1.3 key on a kTLS socket (KeyUpdate; Linux >= 6.14), as probed at startup.',
    registers: [registry],
    // One kernel per pod: with workers: N every worker reports the same fact.
    aggregator: 'first',
  }).set(probe.rekey ? 1 : 0);

  new Gauge({
    name: 'ktls_sidecar_native_available',
    help: 'Whether the native kTLS addon loaded (1) or not (0).',
    registers: [registry],
    // One kernel per pod: with workers: N every worker reports the same fact.
    aggregator: 'first',
  }).set(probe.details.native.available ? 1 : 0);

  // /proc/net/tls_stat mixes two kinds of rows: TlsCurr* are sockets open now,
  // the rest count since boot. Two metrics, so rate() is only ever taken of a counter.
  // The file is read synchronously: it is a procfs file (no disk), and a read
  // that cannot interleave with another scrape's keeps the counter's bookkeeping exact.
  // Both are per network namespace, one per pod: with workers: N each worker reads the same file.
  new Gauge({
    name: 'ktls_sidecar_kernel_tls_sockets',
    help: 'kTLS sockets open now in this network namespace: the TlsCurr* rows of /proc/net/tls_stat, read at scrape time (absent when the tls module is not loaded).',
    labelNames: ['stat'] as const,
    registers: [registry],
    aggregator: 'first',
    collect() {
      this.reset();
      const stat = readTlsStatSync(statPath);
      if (stat === null) return;
      for (const [name, value] of Object.entries(stat)) if (isSocketGauge(name)) this.set({ stat: name }, value);
    },
  });

  const counters = new Counter({
    name: 'ktls_sidecar_kernel_tls_stat_total',
    help: 'Kernel TLS event counters of this network namespace since boot: every row of /proc/net/tls_stat but TlsCurr*, read at scrape time (absent when the tls module is not loaded).',
    labelNames: ['stat'] as const,
    registers: [registry],
    aggregator: 'first',
    collect: () => follow(readTlsStatSync(statPath)),
  });
  const follow = followKernelCounters(counters);
}
