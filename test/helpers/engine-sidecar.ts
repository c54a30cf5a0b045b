// An in-process Sidecar whose kernel probe says "kTLS available" on this
// kTLS-less host, so connections take the HandshakeEngine + install path and
// the installs fail for real (ENOENT). Shared by the integration tests that
// drive that path (ktls-engine-path, ktls-early-fin).
import { Writable } from 'node:stream';
import { createKtlsFlag } from '../../proxy/ktls/flag.js';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { loadConfig } from '../../proxy/config/index.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { registerProbeMetrics } from '../../proxy/admin/probe-metrics.js';
import type { KernelProbe } from '../../proxy/ktls/probe.js';
import { createLogger } from '../../proxy/log.js';
import { Sidecar } from '../../proxy/server.js';
import { nativeStatus } from '../../native/index.js';
import type { LogLine } from './child-sidecar.js';
import type { Teardown } from './teardown.js';

/** A probe result for this host, except that it says kTLS works for everything. */
export async function availableProbe(): Promise<KernelProbe> {
  const real = await probeKernel({ skipNicOffload: true });
  return { ...real, kernelTls: true, available: true, rekey: true, reasonIfNot: null, reasonDetail: null, supports: () => true, reasonFor: () => null };
}

/** Poll `find` every 25 ms for up to 10 s. */
async function poll<T>(find: () => T | undefined, what: string): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const hit = find();
    if (hit !== undefined) return hit;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(what);
}

/**
 * Start the sidecar in this process with `argv` (listen/admin on 127.0.0.1:0
 * added), the "available" probe and the real native addon; shut down at teardown.
 */
export async function startEngineSidecar(t: Teardown, argv: string[], opts: { cpuIntervalMs?: number } = {}) {
  const lines: LogLine[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const logger = createLogger({ level: 'info', destination });
  const metrics = createMetrics({ defaultMetrics: false });
  const config = loadConfig({ argv: ['--listen-host', '127.0.0.1', '--listen-port', '0', '--admin-port', '0', '--log-connections', 'all', ...argv], env: {} });
  const flag = createKtlsFlag({ enabled: true, metrics });
  const sidecar = new Sidecar({ config, logger, events: metrics, onKernelProbe: (k) => registerProbeMetrics(metrics.registry, k), flag, probe: await availableProbe(), nativeStatus: nativeStatus(), ...opts });
  const addr = await sidecar.listen();
  t.teardown(() => sidecar.shutdown());
  const closed = (): LogLine[] => lines.filter((l) => l.event === 'connection_closed');
  return {
    port: addr.port,
    flag,
    lines,
    metrics: () => metrics.registry.metrics(),
    /** The first connection_closed line matching `pred`. */
    closeLine: (pred: (l: LogLine) => boolean): Promise<LogLine> => poll(() => closed().find(pred), 'no matching connection_closed line'),
    /** All connection_closed lines, once there are at least `n`. */
    closeLines: (n: number): Promise<LogLine[]> => poll(() => (closed().length >= n ? closed() : undefined), `fewer than ${n} connection_closed lines`),
  };
}
