// CPU seconds per record-layer mode, for
// `process_cpu_seconds_by_mode_total{ktls="on"|"off"|"none"}`: how much of this
// process's CPU went to kTLS connections vs userspace-TLS ones. With
// `ktls.sampleRate` splitting traffic in one pod, this is the per-mode cost
// without a second deployment.
//
// Method (docs/ktls.md, "CPU accounting"): every interval we take the
// process.cpuUsage() delta (user + system) and the plaintext bytes each mode
// moved in that interval. Splitting the delta in proportion to bytes alone
// would give both modes the same cost per byte *by construction* — the very
// number we want to compare. So the split uses per-byte costs estimated by a
// least-squares fit over recent intervals:
//
//     cpu_i ≈ a·on_i + b·off_i + c          (a, b, c ≥ 0; exponential forgetting)
//
// Interval i then gets on = a·on_i, off = b·off_i, and the remainder (the
// fixed cost c and the fit's error, positive or negative) is shared in
// proportion to bytes, so on + off always equals the measured delta. Until
// the fit is identifiable (too few intervals, or one mode carries all the
// traffic) the split falls back to bytes. An interval with no bytes at all is
// booked as `none` (idle work: timers, GC, admin).

import type { ConnectionObserver, ConnectionSpan, OpenedConnection } from './events.js';

export interface CpuSplit {
  /** Seconds attributed to each mode in this interval; on + off + none = delta. */
  readonly on: number;
  readonly off: number;
  readonly none: number;
  /** How the split was made. */
  readonly method: 'fit' | 'bytes' | 'idle';
}

export interface CostEstimate {
  /** Seconds per MiB, kTLS on / off, and fixed seconds per interval; null when not identifiable yet. */
  readonly onPerMiB: number;
  readonly offPerMiB: number;
  readonly fixed: number;
}

const MIB = 1024 * 1024;

/**
 * Online least squares for y ≈ a·x1 + b·x2 + c with forgetting factor
 * `lambda`, non-negative coefficients (a coefficient that fits negative is
 * fixed at 0 and the rest refitted), and a small ridge term so a
 * near-singular system (no variation in the mix) gives "not identifiable"
 * instead of wild numbers.
 */
export class CostModel {
  private readonly lambda: number;
  private readonly minSamples: number;
  // Accumulated X^T X (3x3, symmetric) and X^T y, features [x1, x2, 1].
  private readonly xtx = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
  ];
  private readonly xty = [0, 0, 0];
  private samples = 0;

  constructor(options: { lambda?: number; minSamples?: number } = {}) {
    this.lambda = options.lambda ?? 0.98;
    this.minSamples = options.minSamples ?? 6;
  }

  /** One interval: MiB moved per mode, CPU seconds used. */
  add(onMiB: number, offMiB: number, cpuSeconds: number): void {
    const x = [onMiB, offMiB, 1];
    for (let i = 0; i < 3; i++) {
      this.xty[i] = this.xty[i]! * this.lambda + x[i]! * cpuSeconds;
      for (let j = 0; j < 3; j++) this.xtx[i]![j] = this.xtx[i]![j]! * this.lambda + x[i]! * x[j]!;
    }
    this.samples++;
  }

  /** Current estimate, or null while the per-mode costs cannot be told apart. */
  estimate(): CostEstimate | null {
    if (this.samples < this.minSamples) return null;
    // Both modes must have moved bytes, and their mix must vary (otherwise a and b trade off freely).
    if (this.xtx[0]![0]! <= 0 || this.xtx[1]![1]! <= 0) return null;
    let active = [0, 1, 2];
    for (let round = 0; round < 3; round++) {
      const sol = solveSubset(this.xtx, this.xty, active);
      if (!sol) return null;
      const negative = active.filter((_, k) => sol[k]! < 0);
      if (negative.length === 0) {
        const coef = [0, 0, 0];
        active.forEach((idx, k) => (coef[idx] = sol[k]!));
        // A per-mode cost fixed at 0 means "not identifiable", not "free".
        if (!active.includes(0) || !active.includes(1)) return null;
        return { onPerMiB: coef[0]!, offPerMiB: coef[1]!, fixed: coef[2]! };
      }
      active = active.filter((idx) => !negative.includes(idx));
    }
    return null;
  }
}

/** Solve the normal equations restricted to `idx` (ridge-regularised); null if singular. */
function solveSubset(xtx: number[][], xty: number[], idx: number[]): number[] | null {
  const n = idx.length;
  if (n === 0) return null;
  const trace = idx.reduce((s, i) => s + xtx[i]![i]!, 0);
  const ridge = 1e-9 * (trace / n || 1);
  const m = idx.map((i, r) => [...idx.map((j, c) => xtx[i]![j]! + (r === c ? ridge : 0)), xty[i]!]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r]![col]!) > Math.abs(m[pivot]![col]!)) pivot = r;
    if (Math.abs(m[pivot]![col]!) < 1e-12 * (trace || 1)) return null;
    [m[col], m[pivot]] = [m[pivot]!, m[col]!];
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = m[r]![col]! / m[col]![col]!;
      for (let c = col; c <= n; c++) m[r]![c] = m[r]![c]! - f * m[col]![c]!;
    }
  }
  // Condition check: a near-singular system (mix never varied) is not an estimate.
  const diag = m.map((row, r) => Math.abs(row[r]!));
  if (Math.min(...diag) < 1e-6 * Math.max(...diag)) return null;
  return m.map((row, r) => row[n]! / row[r]!);
}

/**
 * Split one interval's CPU delta between the modes (pure: the unit-tested
 * core). `estimate` null → by bytes.
 */
export function splitInterval(cpuSeconds: number, onBytes: number, offBytes: number, estimate: CostEstimate | null): CpuSplit {
  const cpu = Math.max(0, cpuSeconds);
  const total = onBytes + offBytes;
  if (total <= 0) return { on: 0, off: 0, none: cpu, method: 'idle' };
  const shareOn = onBytes / total;
  if (!estimate) return { on: cpu * shareOn, off: cpu * (1 - shareOn), none: 0, method: 'bytes' };
  let on = estimate.onPerMiB * (onBytes / MIB);
  let off = estimate.offPerMiB * (offBytes / MIB);
  const variable = on + off;
  if (variable > cpu) {
    // The model says more than was used (noise): scale the variable parts down.
    const k = variable > 0 ? cpu / variable : 0;
    on *= k;
    off *= k;
  } else {
    const rest = cpu - variable; // fixed cost + fit error, shared by bytes
    on += rest * shareOn;
    off += rest * (1 - shareOn);
  }
  return { on, off, none: 0, method: 'fit' };
}

export interface CpuAccountingOptions {
  /** Sampling interval, ms (default 10 000). */
  intervalMs?: number;
  /** Called with every interval's split (e.g. to increment the Prometheus counter). */
  onSplit?: (split: CpuSplit) => void;
  /** Injected for tests; default process.cpuUsage. */
  cpuUsage?: (previous?: NodeJS.CpuUsage) => NodeJS.CpuUsage;
  model?: CostModel;
}

/**
 * Collects bytes per mode and turns cpuUsage deltas into per-mode seconds; an
 * observer of every open connection's bytes (proxy/observe/events.ts).
 */
export class CpuAccounting implements Pick<ConnectionObserver, 'opened'> {
  private onBytes = 0;
  private offBytes = 0;
  private last: NodeJS.CpuUsage;
  private timer: NodeJS.Timeout | null = null;
  private readonly cpuUsage: (previous?: NodeJS.CpuUsage) => NodeJS.CpuUsage;
  private readonly model: CostModel;
  private readonly options: CpuAccountingOptions;

  constructor(options: CpuAccountingOptions = {}) {
    this.options = options;
    this.cpuUsage = options.cpuUsage ?? ((p) => process.cpuUsage(p));
    this.model = options.model ?? new CostModel();
    this.last = this.cpuUsage();
  }

  /** Plaintext bytes moved (either direction) by a connection in `mode` (ktls on / off). */
  addBytes(ktls: 'on' | 'off', bytes: number): void {
    if (ktls === 'on') this.onBytes += bytes;
    else this.offBytes += bytes;
  }

  opened(conn: OpenedConnection): ConnectionSpan {
    const mode = conn.labels.ktls;
    return { bytes: (rx, tx) => this.addBytes(mode, rx + tx) };
  }

  /** Close the current interval now (the timer calls this). */
  sample(): CpuSplit {
    const now = this.cpuUsage();
    const cpu = (now.user - this.last.user + (now.system - this.last.system)) / 1e6;
    this.last = now;
    const on = this.onBytes;
    const off = this.offBytes;
    this.onBytes = 0;
    this.offBytes = 0;
    // Estimate from history before adding this interval, so one interval never explains itself.
    const split = splitInterval(cpu, on, off, this.model.estimate());
    if (on + off > 0) this.model.add(on / MIB, off / MIB, cpu);
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
