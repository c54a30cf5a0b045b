// CPU seconds per record-layer mode, for
// `process_cpu_seconds_by_mode_total{ktls="on"|"off"|"none"}`: how much of this
// process's CPU went to kTLS connections vs userspace-TLS ones. With
// `ktls.sampleRate` splitting traffic in one pod, this is the per-mode cost
// without a second deployment.
//
// Method (docs/ktls.md §6): every interval, the process.cpuUsage() delta
// (user + system) is shared between on and off in proportion to the
// plaintext bytes each mode moved in that interval; an interval with no bytes
// is booked as `none` (idle work: timers, GC, admin). on + off + none always
// equals the measured CPU. A share by bytes is an attribution, not a
// measurement of per-byte cost: compare modes with the bench, not with this.

import type { ByteCounts, ConnectionObserver, ConnectionSpan, OpenedConnection } from './events.js';

/** Seconds attributed to each mode in one interval; on + off + none = the measured delta. */
export interface CpuSplit {
  readonly on: number;
  readonly off: number;
  readonly none: number;
}

/** Split one interval's CPU delta (seconds) by the bytes each mode moved. */
export function splitInterval(cpuSeconds: number, onBytes: number, offBytes: number): CpuSplit {
  const cpu = Math.max(0, cpuSeconds);
  const total = onBytes + offBytes;
  if (total <= 0) return { on: 0, off: 0, none: cpu };
  const on = cpu * (onBytes / total);
  return { on, off: cpu - on, none: 0 };
}

export interface CpuAccountingOptions {
  /** Sampling interval, ms (default 10 000). */
  intervalMs?: number;
  /** Called with every interval's split (e.g. to increment the Prometheus counter). */
  onSplit?: (split: CpuSplit) => void;
  /** Injected for tests; default process.cpuUsage. */
  cpuUsage?: () => NodeJS.CpuUsage;
}

/** An open connection's byte counts and how much of them earlier intervals took. */
interface Tracked {
  readonly mode: 'on' | 'off';
  readonly counts: ByteCounts;
  seen: number;
}

function moved(t: Tracked): number {
  const total = t.counts.bytesIn + t.counts.bytesOut;
  const d = total - t.seen;
  t.seen = total;
  return d > 0 ? d : 0;
}

/** Reads every open connection's bytes each interval and turns cpuUsage deltas into per-mode seconds. */
export class CpuAccounting implements Pick<ConnectionObserver, 'opened'> {
  /** Bytes of connections that closed during the current interval. */
  private readonly bytes = { on: 0, off: 0 };
  private readonly open = new Set<Tracked>();
  private last: NodeJS.CpuUsage;
  private timer: NodeJS.Timeout | null = null;
  private readonly cpuUsage: () => NodeJS.CpuUsage;

  constructor(private readonly options: CpuAccountingOptions = {}) {
    this.cpuUsage = options.cpuUsage ?? (() => process.cpuUsage());
    this.last = this.cpuUsage();
  }

  opened(conn: OpenedConnection): ConnectionSpan {
    const t: Tracked = { mode: conn.labels.ktls, counts: conn.bytes, seen: 0 };
    this.open.add(t);
    return {
      closed: () => {
        this.bytes[t.mode] += moved(t);
        this.open.delete(t);
      },
    };
  }

  /** Close the current interval now (the timer calls this). */
  sample(): CpuSplit {
    const now = this.cpuUsage();
    const cpu = (now.user - this.last.user + (now.system - this.last.system)) / 1e6;
    this.last = now;
    for (const t of this.open) this.bytes[t.mode] += moved(t);
    const split = splitInterval(cpu, this.bytes.on, this.bytes.off);
    this.bytes.on = 0;
    this.bytes.off = 0;
    this.options.onSplit?.(split);
    return split;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sample(), this.options.intervalMs ?? 10_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
