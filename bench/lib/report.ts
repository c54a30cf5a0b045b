// Samples -> medians [min..max] per workload and system, ratios of the sidecar rows to the peers, the Markdown
// tables printed on stdout, and the JSON file that bench/chart.ts draws from.
export interface Workload {
  id: string;
  name: string;
  path: string;
  bodyBytes: number;
  perRequest: boolean;
  /** Every request on a new TLS connection (wrk sends `Connection: close`): CPU per request is CPU per connection. */
  newConnections?: boolean;
}

export const WORKLOADS: Workload[] = [
  { id: '1k', name: '1 KiB responses', path: '/1k', bodyBytes: 1024, perRequest: true },
  { id: '64k', name: '64 KiB responses', path: '/64k', bodyBytes: 64 * 1024, perRequest: false },
  { id: '1m', name: '1 MiB responses', path: '/1m', bodyBytes: 1024 * 1024, perRequest: false },
  { id: '16m', name: '16 MiB responses', path: '/16m', bodyBytes: 16 * 1024 * 1024, perRequest: false },
  // The handshake's share: what a connection costs beyond its requests (the keep-alive workloads open wrk's 8
  // connections once per sample, so their figures include 8 handshakes each).
  { id: 'conn', name: '1 KiB responses, a new TLS connection per request', path: '/1k', bodyBytes: 1024, perRequest: true, newConnections: true },
];

export interface Sample {
  workload: string;
  system: string;
  round: number;
  requests: number;
  bytes: number;
  seconds: number;
  cpuUser: number;
  cpuSys: number;
  rps: number;
  cpuUsPerReq: number;
  cpuSPerGiB: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** wrk errors by kind ('' = none); a sample with errors is invalid and left out of the medians. */
  errors: string;
  valid: boolean;
  /** What the record layer was: the sidecar's connections by ktls/reason/direction, tls_stat deltas. */
  recordLayer: string;
  processes: number;
}

export interface Stat { median: number; min: number; max: number; n: number }
export interface Cell {
  workload: string;
  system: string;
  rps: Stat;
  cpuUsPerReq: Stat;
  cpuSPerGiB: Stat;
  p50Us: Stat;
  p99Us: Stat;
  /** Samples with wrk errors: the cell is marked invalid and gets no ratios; its medians are over the rest. */
  invalid: number;
  errors: string;
  recordLayer: string;
}

function stat(xs: number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

export function cellOf(samples: Sample[], workload: string, system: string): Cell {
  const all = samples.filter((s) => s.workload === workload && s.system === system);
  const ok = all.filter((s) => s.valid);
  const layers = [...new Set(all.map((s) => s.recordLayer))];
  return {
    workload,
    system,
    rps: stat(ok.map((s) => s.rps)),
    cpuUsPerReq: stat(ok.map((s) => s.cpuUsPerReq)),
    cpuSPerGiB: stat(ok.map((s) => s.cpuSPerGiB)),
    p50Us: stat(ok.map((s) => s.p50Us)),
    p99Us: stat(ok.map((s) => s.p99Us)),
    invalid: all.length - ok.length,
    errors: [...new Set(all.filter((s) => !s.valid).map((s) => s.errors || 'no requests'))].join('; '),
    recordLayer: layers.join(' | '),
  };
}

/** The figure a workload is judged by: CPU per request for 1 KiB, CPU per GiB for the others. */
export function primary(w: Workload, c: Cell): Stat {
  return w.perRequest ? c.cpuUsPerReq : c.cpuSPerGiB;
}

const num = (x: number, d: number): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const range = (s: Stat, d: number): string => (s.n ? `${num(s.median, d)} [${num(s.min, d)}..${num(s.max, d)}]` : 'n/a');
const ratio = (a: Stat, b: Stat | undefined): string => (b && a.n && b.n ? num(a.median / b.median, 2) : '');
const scaled = (s: Stat, k: number): Stat => ({ ...s, median: s.median * k, min: s.min * k, max: s.max * k });

/** The row a sidecar variant is compared with in the "÷ off" column: the same mode, one worker, kTLS off. */
export function offBaseline(system: string): string | null {
  if (system === 'sidecar' || system === 'sidecar-tcp' || !system.startsWith('sidecar')) return null;
  return system.startsWith('sidecar-tcp') ? 'sidecar-tcp' : 'sidecar';
}

/**
 * Markdown table of one workload; `notAvailable` rows (system -> reason) are listed as such. A run with
 * nginx-ktls (the lab) gets one more column: every row against nginx + kTLS, the peer issue 11 is judged by.
 */
export function table(w: Workload, cells: Cell[], notAvailable: Map<string, string>): string {
  const by = new Map(cells.map((c) => [c.system, c]));
  // A peer whose cell is invalid gives no ratios either.
  const peer = (id: string | null): Stat | undefined => (id && by.get(id) && !by.get(id)!.invalid ? primary(w, by.get(id)!) : undefined);
  const unit = w.perRequest ? 'CPU µs/req' : 'CPU s/GiB';
  const ktlsPeer = by.has('nginx-ktls');
  const lines = [
    `| system | req/s | CPU µs/req | CPU s/GiB | p50 ms | p99 ms | ${unit} ÷ node | ÷ nginx |${ktlsPeer ? ' ÷ nginx-ktls |' : ''} ÷ off | p99 ÷ node | record layer |`,
    `|---|---|---|---|---|---|---|---|${ktlsPeer ? '---|' : ''}---|---|---|`,
  ];
  for (const c of cells) {
    const p = primary(w, c);
    const withRatios = c.system.startsWith('sidecar') && !c.invalid;
    const invalid = c.invalid ? ` **INVALID**: ${c.invalid} sample(s) with wrk errors (${c.errors})` : '';
    const nodeP99 = by.get('node')?.invalid ? undefined : by.get('node')?.p99Us;
    const toKtls = ktlsPeer ? ` ${!c.invalid && c.system !== 'nginx-ktls' ? ratio(p, peer('nginx-ktls')) : ''} |` : '';
    lines.push(`| ${c.system} | ${range(c.rps, 0)} | ${range(c.cpuUsPerReq, 1)} | ${range(c.cpuSPerGiB, 2)} | ${num(c.p50Us.median / 1000, 2)} | ${range(scaled(c.p99Us, 1e-3), 2)} | ${withRatios ? ratio(p, peer('node')) : ''} | ${withRatios ? ratio(p, peer('nginx')) : ''} |${toKtls} ${withRatios ? ratio(p, peer(offBaseline(c.system))) : ''} | ${withRatios ? ratio(c.p99Us, nodeP99) : ''} | ${c.recordLayer}${invalid} |`);
  }
  for (const [id, reason] of notAvailable) lines.push(`| ${id} | not available: ${reason} | | | | | | |${ktlsPeer ? ' |' : ''} | | |`);
  return lines.join('\n');
}

export interface BenchJson {
  meta: Record<string, unknown> & { systems: Record<string, { description: string; available: boolean; reason: string; tls: string }> };
  workloads: Workload[];
  samples: Sample[];
  cells: Cell[];
}

/**
 * The acceptance figures of issue 10, from the cells of one run: the sidecar (one worker) against the plain Node
 * proxy, and the two-worker sidecar against one worker. Only lines whose cells exist and are valid.
 */
export function targets(cells: Cell[]): string[] {
  const get = (w: string, s: string): Cell | undefined => cells.find((c) => c.workload === w && c.system === s && !c.invalid && c.cpuUsPerReq.n > 0);
  const out: string[] = [];
  const line = (what: string, value: number, limit: number): void => {
    out.push(`${value <= limit ? 'met    ' : 'NOT MET'} ${what}: ${num(value, 2)} (target <= ${limit})`);
  };
  for (const w of WORKLOADS) {
    if (w.newConnections) continue; // issue 10 set no target per connection
    const sc = get(w.id, 'sidecar');
    const node = get(w.id, 'node');
    if (sc && node) {
      if (w.perRequest) {
        line(`${w.id} CPU µs/req sidecar / node`, sc.cpuUsPerReq.median / node.cpuUsPerReq.median, 0.5);
        line(`${w.id} p99 sidecar / node`, sc.p99Us.median / node.p99Us.median, 1);
      } else {
        line(`${w.id} CPU s/GiB sidecar / node`, sc.cpuSPerGiB.median / node.cpuSPerGiB.median, 0.8);
      }
    }
    const w2 = get(w.id, 'sidecar-w2');
    if (sc && w2 && w.perRequest) line(`${w.id} CPU µs/req sidecar-w2 / sidecar`, w2.cpuUsPerReq.median / sc.cpuUsPerReq.median, 1.1);
  }
  return out;
}

/**
 * The acceptance figures of issue 11 (lab runs), from the cells of one run: the sidecar's kTLS modes against
 * nginx + OpenSSL kTLS per GiB, and against the sidecar's own userspace TLS on small responses. The floor line is
 * an estimate, not a target: nginx + kTLS minus the L4 relay is what the kernel's cipher (and TLS framing) costs
 * per GiB, the part no proxy that keeps kTLS can save; a splice path pays that plus its own (smaller) relay cost.
 */
export function kernelTargets(cells: Cell[]): string[] {
  const get = (w: string, s: string): Cell | undefined => cells.find((c) => c.workload === w && c.system === s && !c.invalid && c.cpuUsPerReq.n > 0);
  const out: string[] = [];
  const line = (what: string, value: number, limit: number): void => {
    out.push(`${value <= limit ? 'met    ' : 'NOT MET'} ${what}: ${num(value, 2)} (target <= ${limit})`);
  };
  for (const w of WORKLOADS) {
    const ktls = get(w.id, 'nginx-ktls');
    const off = get(w.id, 'sidecar');
    const value = (c: Cell): number => primary(w, c).median;
    if (ktls && (w.id === '16m' || w.id === '1m')) {
      const modes = ['sidecar-tx', 'sidecar-txrx'].map((id) => get(w.id, id)).filter((c): c is Cell => !!c);
      if (modes.length) {
        const best = modes.reduce((a, b) => (value(a) <= value(b) ? a : b));
        line(`${w.id} CPU s/GiB best http kTLS mode (${best.system}) / nginx-ktls`, value(best) / value(ktls), 1.0);
      }
      const tcp = get(w.id, 'sidecar-tcp-txrx');
      if (tcp && w.id === '16m') line(`${w.id} CPU s/GiB sidecar-tcp-txrx / nginx-ktls`, value(tcp) / value(ktls), 0.8);
      const l4 = get(w.id, 'l4');
      if (l4) {
        const cipher = value(ktls) - value(l4);
        out.push(`floor  ${w.id}: nginx-ktls - l4 = ${num(cipher, 2)} s/GiB (${num(cipher / value(ktls), 2)} of nginx-ktls): the kernel's cipher + framing, estimated`);
      }
    }
    if (off && (w.id === '1k' || w.id === '64k')) {
      for (const id of ['sidecar-tx', 'sidecar-txrx']) {
        const c = get(w.id, id);
        if (c) line(`${w.id} ${w.perRequest ? 'CPU µs/req' : 'CPU s/GiB'} ${id} / sidecar (off)`, value(c) / value(off), 1.0);
      }
    }
  }
  return out;
}
