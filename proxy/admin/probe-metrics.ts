// The Prometheus view of the startup kernel probe, and the kernel's own TLS
// counters (/proc/net/tls_stat) read at scrape time. An adapter like
// metrics.ts: the composition root registers it on the registry metrics.ts
// owns, once the probe has run.
import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { KernelProbe } from '../ktls/probe.js';
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS } from '../../native/crypto-info.js';
import { TLS_STAT_PATH, readTlsStat } from '../ktls/tls-stat.js';

export interface ProbeMetricsOptions {
  /** Where the counters are read from (tests). */
  tlsStatPath?: string;
  /**
   * The value the caller gave `ktls_sidecar_ktls_kernel_available`, so the two
   * availability gauges are one number (docs/metrics.md). Default: `probe.available`.
   */
  kernelAvailable?: boolean;
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
    name: 'ktls_sidecar_kernel_tls_available',
    help: 'Deprecated, same value as ktls_sidecar_ktls_kernel_available: whether kernel TLS works on this node for at least one cipher (1) or not (0), as probed at startup.',
    registers: [registry],
    // One kernel per pod: with workers: N every worker reports the same fact.
    aggregator: 'first',
  }).set((opts.kernelAvailable ?? probe.available) ? 1 : 0);

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

  new Gauge({
    name: 'ktls_sidecar_kernel_tls_stat',
    help: 'Kernel TLS counters from /proc/net/tls_stat (read at scrape time; absent when the tls module is not loaded).',
    labelNames: ['counter'] as const,
    registers: [registry],
    // One kernel per pod: with workers: N every worker reports the same fact.
    aggregator: 'first',
    async collect() {
      this.reset();
      const stat = await readTlsStat(statPath);
      if (stat === null) return;
      for (const [counter, value] of Object.entries(stat)) this.set({ counter }, value);
    },
  });
}
