// A Prometheus histogram whose observe() costs a bucket search and three adds.
// prom-client's Histogram validates and hashes the label object on every
// observation (also through labels()); on the per-request path that was a
// visible share of a 1 KiB request's CPU. Here a label set is resolved once
// into a cell (child()), and the registry reads the cells at scrape time in
// prom-client's own format (the same exposition, and the `sum` aggregation
// for `workers: N`).
import type { Metric, MetricValueWithName, Registry } from 'prom-client';

/** One label set's observations; counts are per bucket (not cumulative) until a scrape adds them up. */
interface Cell {
  readonly labels: Readonly<Record<string, string>>;
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** What Registry reads from a metric at scrape time (prom-client's runtime shape; its typings use an enum). */
interface Scraped {
  name: string;
  help: string;
  type: 'histogram';
  values: MetricValueWithName<string>[];
  aggregator: 'sum';
}

function sample(metricName: string, labels: Record<string, string | number>, value: number, exemplar: null | undefined): MetricValueWithName<string> {
  return { value, metricName, exemplar, labels } as MetricValueWithName<string>;
}

export interface HistogramChild {
  observe(value: number): void;
}

export class LeanHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly cells = new Map<string, Cell>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    readonly labelNames: readonly L[],
    registers: readonly Registry[],
  ) {
    for (const r of registers) r.registerMetric(this as unknown as Metric);
  }

  /** The observer of one label set (made once; keep it). */
  child(labels: Readonly<Record<L, string>>): HistogramChild {
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    let cell = this.cells.get(key);
    if (!cell) {
      cell = { labels: { ...labels }, counts: new Float64Array(this.buckets.length), sum: 0, count: 0 };
      this.cells.set(key, cell);
    }
    const c = cell;
    const bounds = this.buckets;
    return {
      observe(value: number): void {
        if (!Number.isFinite(value)) return;
        let i = 0;
        while (i < bounds.length && value > (bounds[i] as number)) i++;
        // Past the last bound: only +Inf (the count) holds it.
        if (i < bounds.length) c.counts[i] = (c.counts[i] as number) + 1;
        c.sum += value;
        c.count++;
      },
    };
  }

  get(): Promise<Scraped> {
    const values: MetricValueWithName<string>[] = [];
    // prom-client's shape exactly (le first; exemplar null on buckets), so
    // the exposition and the JSON the workers' aggregation reads are the same.
    for (const cell of this.cells.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += cell.counts[i] as number;
        values.push(sample(`${this.name}_bucket`, { le: this.buckets[i] as number, ...cell.labels }, cumulative, null));
      }
      values.push(sample(`${this.name}_bucket`, { le: '+Inf', ...cell.labels }, cell.count, null));
      values.push(sample(`${this.name}_sum`, { ...cell.labels }, cell.sum, undefined));
      values.push(sample(`${this.name}_count`, { ...cell.labels }, cell.count, undefined));
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  /** registry.resetMetrics(): every cell back to zero (children made before stay valid). */
  reset(): void {
    for (const cell of this.cells.values()) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
    }
  }
}
