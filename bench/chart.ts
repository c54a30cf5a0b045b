// SVG bar chart of a bench run (no dependencies): one panel per workload, CPU µs/request for 1 KiB and CPU s/GiB
// for the others, one bar per system at its median with a min..max whisker, lower is better.
//
//   node --import tsx bench/chart.ts <bench.json> <out.svg>
import { readFileSync, writeFileSync } from 'node:fs';
import type { BenchJson, Cell, Stat, Workload } from './lib/report.js';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node --import tsx bench/chart.ts <bench.json> <out.svg>');
  process.exit(2);
}
const data = JSON.parse(readFileSync(input, 'utf8')) as BenchJson;

/** A fixed colour per system, so that two charts read alike. */
const COLOURS: Record<string, string> = {
  nginx: '#4c78a8', 'nginx-ktls': '#72b7b2', node: '#9d755d', sidecar: '#e45756', 'sidecar-w2': '#f58518', 'sidecar-tx': '#54a24b', 'sidecar-txrx': '#b279a2',
  l4: '#bab0ac', 'sidecar-tcp': '#ff9da6', 'sidecar-tcp-tx': '#88d27a', 'sidecar-tcp-txrx': '#d6a5c9',
};
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

const PANEL_W = 250;
const PANEL_H = 260;
const TOP = 70;
const LEFT = 20;
const systems = [...new Set(data.cells.map((c) => c.system))];
const workloads = data.workloads.filter((w) => data.cells.some((c) => c.workload === w.id));
const width = LEFT * 2 + PANEL_W * workloads.length;
const height = TOP + PANEL_H + 70;

function panel(w: Workload, i: number): string {
  const x0 = LEFT + i * PANEL_W;
  const cells = systems.map((s) => data.cells.find((c) => c.workload === w.id && c.system === s)).filter((c): c is Cell => !!c);
  const statOf = (c: Cell): Stat => (w.id === '1k' ? c.cpuUsPerReq : c.cpuSPerGiB);
  const max = Math.max(...cells.map((c) => statOf(c).max).filter(Number.isFinite), 1e-9) * 1.15;
  const plotTop = TOP + 30;
  const plotH = PANEL_H - 50;
  const y = (v: number): number => plotTop + plotH - (v / max) * plotH;
  const barW = Math.min(40, (PANEL_W - 40) / Math.max(1, cells.length) - 8);
  const out: string[] = [
    `<text x="${x0 + PANEL_W / 2}" y="${TOP}" text-anchor="middle" font-weight="bold">${esc(w.name)}</text>`,
    `<text x="${x0 + PANEL_W / 2}" y="${TOP + 16}" text-anchor="middle" fill="#555">${w.id === '1k' ? 'CPU µs per request' : 'CPU s per GiB'}</text>`,
    `<line x1="${x0 + 15}" y1="${plotTop + plotH}" x2="${x0 + PANEL_W - 15}" y2="${plotTop + plotH}" stroke="#999"/>`,
  ];
  cells.forEach((c, j) => {
    const s = statOf(c);
    const bx = x0 + 25 + j * (barW + 8);
    const cx = bx + barW / 2;
    if (!s.n) {
      out.push(`<text x="${cx}" y="${plotTop + plotH - 4}" text-anchor="middle" fill="#999">n/a</text>`);
    } else {
      out.push(`<rect x="${bx}" y="${y(s.median).toFixed(1)}" width="${barW}" height="${(plotTop + plotH - y(s.median)).toFixed(1)}" fill="${COLOURS[c.system] ?? '#888'}"><title>${esc(c.system)}: ${fmt(s.median)} [${fmt(s.min)}..${fmt(s.max)}]</title></rect>`);
      out.push(`<line x1="${cx}" y1="${y(s.min).toFixed(1)}" x2="${cx}" y2="${y(s.max).toFixed(1)}" stroke="#222"/>`);
      for (const v of [s.min, s.max]) out.push(`<line x1="${cx - 5}" y1="${y(v).toFixed(1)}" x2="${cx + 5}" y2="${y(v).toFixed(1)}" stroke="#222"/>`);
      out.push(`<text x="${cx}" y="${(y(s.max) - 5).toFixed(1)}" text-anchor="middle" font-size="11">${fmt(s.median)}</text>`);
    }
    out.push(`<text x="${cx}" y="${plotTop + plotH + 14}" text-anchor="end" font-size="11" transform="rotate(-35 ${cx} ${plotTop + plotH + 14})">${esc(c.system)}</text>`);
  });
  return out.join('\n');
}

const meta = data.meta as Record<string, unknown>;
const notAvailable = Object.entries(data.meta.systems).filter(([, s]) => !s.available).map(([id, s]) => `${id} (${s.reason})`).join('; ');
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#fff"/>
<text x="${LEFT}" y="24" font-size="16" font-weight="bold">ktls-sidecar bench: CPU cost of the proxy (lower is better)</text>
<text x="${LEFT}" y="44" fill="#555" font-size="12">${esc(`${String(meta.mode)} run ${String(meta.date).slice(0, 10)}, kernel ${String(meta.kernel)}, ${String(meta.rounds)} rounds x ${String(meta.durationS)} s, wrk -c${String(meta.connections)}; bar = median, whisker = min..max`)}</text>
${workloads.map(panel).join('\n')}
${notAvailable ? `<text x="${LEFT}" y="${height - 10}" fill="#555" font-size="11">${esc(`not available: ${notAvailable}`)}</text>` : ''}
</svg>
`;
writeFileSync(output, svg);
console.log(`chart: ${output}`);
