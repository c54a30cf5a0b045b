// The bench's report (bench/lib/report.ts): which row each ratio compares with, the extra column a lab run with
// nginx + kTLS gets, and the issue 11 target lines. Synthetic cells with known medians: this checks the
// arithmetic and the labels, not any figure (those come from benchmark runs only).
import t from 'tap';
import { type Cell, type Stat, WORKLOADS, kernelTargets, offBaseline, table } from '../../bench/lib/report.js';

const st = (median: number): Stat => ({ median, min: median, max: median, n: 3 });

function cell(workload: string, system: string, perReq: number, perGiB: number, invalid = 0): Cell {
  return {
    workload, system, rps: st(1000), cpuUsPerReq: st(perReq), cpuSPerGiB: st(perGiB), p50Us: st(500), p99Us: st(2000),
    invalid, errors: invalid ? 'timeout 1' : '', recordLayer: 'x',
  };
}

const w16m = WORKLOADS.find((w) => w.id === '16m')!;
const w1k = WORKLOADS.find((w) => w.id === '1k')!;

t.test('each sidecar variant is compared with its own mode with kTLS off', (t) => {
  t.equal(offBaseline('sidecar-tx'), 'sidecar');
  t.equal(offBaseline('sidecar-txrx'), 'sidecar');
  t.equal(offBaseline('sidecar-w2'), 'sidecar');
  t.equal(offBaseline('sidecar-tcp-txrx'), 'sidecar-tcp');
  t.equal(offBaseline('sidecar-tcp-tx'), 'sidecar-tcp');
  t.equal(offBaseline('sidecar'), null, 'the baselines themselves have none');
  t.equal(offBaseline('sidecar-tcp'), null);
  t.equal(offBaseline('nginx-ktls'), null, 'peers have none');
  t.end();
});

t.test('a host run keeps its columns; a run with nginx-ktls gets the ratio to it on every row', (t) => {
  const host = table(w1k, [cell('1k', 'node', 100, 1), cell('1k', 'sidecar', 40, 1)], new Map());
  t.notMatch(host, /nginx-ktls/, 'no nginx-ktls column without that peer');
  t.match(host, /\| sidecar \|.*\| 0\.40 \|/, 'sidecar ÷ node');

  const cells = [
    cell('16m', 'l4', 0, 0.4), cell('16m', 'nginx', 0, 1.1), cell('16m', 'nginx-ktls', 0, 1.0),
    cell('16m', 'sidecar', 0, 3.0), cell('16m', 'sidecar-txrx', 0, 2.0), cell('16m', 'sidecar-tcp', 0, 2.5), cell('16m', 'sidecar-tcp-txrx', 0, 0.75),
  ];
  const lab = table(w16m, cells, new Map([['sidecar-tx', 'exited']]));
  const row = (id: string): string[] => lab.split('\n').find((l) => l.startsWith(`| ${id} |`))!.split('|').map((x) => x.trim());
  const header = lab.split('\n')[0]!.split('|').map((x) => x.trim());
  const col = (name: string): number => header.indexOf(name);
  t.ok(col('÷ nginx-ktls') > 0 && col('÷ off') > 0, 'both columns are there');
  t.equal(row('l4')[col('÷ nginx-ktls')], '0.40', 'the floor against nginx + kTLS');
  t.equal(row('nginx')[col('÷ nginx-ktls')], '1.10', 'nginx userspace against nginx + kTLS');
  t.equal(row('nginx-ktls')[col('÷ nginx-ktls')], '', 'not against itself');
  t.equal(row('sidecar-txrx')[col('÷ off')], '0.67', 'http kTLS mode ÷ http off');
  t.equal(row('sidecar-tcp-txrx')[col('÷ off')], '0.30', 'tcp kTLS mode ÷ tcp off, not ÷ http off');
  t.equal(row('sidecar-tcp-txrx')[col('÷ nginx-ktls')], '0.75');
  t.equal(row('sidecar-tx').length, row('sidecar').length, 'a row that did not start has every column');
  t.end();
});

t.test('issue 11 targets: best http mode and tcp mode against nginx-ktls, kTLS against off, the floor estimate', (t) => {
  const cells = [
    cell('16m', 'l4', 0, 0.4), cell('16m', 'nginx-ktls', 0, 1.0), cell('16m', 'sidecar', 0, 3.0),
    cell('16m', 'sidecar-tx', 0, 1.2), cell('16m', 'sidecar-txrx', 0, 0.9), cell('16m', 'sidecar-tcp-txrx', 0, 0.85),
    cell('1k', 'sidecar', 100, 0), cell('1k', 'sidecar-tx', 104, 0), cell('1k', 'sidecar-txrx', 99, 0),
    cell('64k', 'sidecar', 0, 5), cell('64k', 'sidecar-tx', 0, 4, 1), cell('64k', 'sidecar-txrx', 0, 4.5),
  ];
  const lines = kernelTargets(cells);
  t.ok(lines.includes('met     16m CPU s/GiB best http kTLS mode (sidecar-txrx) / nginx-ktls: 0.90 (target <= 1)'), 'the better of tx and txrx');
  t.ok(lines.includes('NOT MET 16m CPU s/GiB sidecar-tcp-txrx / nginx-ktls: 0.85 (target <= 0.8)'));
  t.ok(lines.some((l) => l.startsWith('floor  16m: nginx-ktls - l4 = 0.60 s/GiB (0.60 of nginx-ktls)')), 'the floor is an estimate line');
  t.ok(lines.includes('NOT MET 1k CPU µs/req sidecar-tx / sidecar (off): 1.04 (target <= 1)'));
  t.ok(lines.includes('met     1k CPU µs/req sidecar-txrx / sidecar (off): 0.99 (target <= 1)'));
  t.notOk(lines.some((l) => l.includes('64k') && l.includes('sidecar-tx /')), 'an invalid cell gives no target line');
  t.ok(lines.includes('met     64k CPU s/GiB sidecar-txrx / sidecar (off): 0.90 (target <= 1)'));
  t.same(kernelTargets(cells.filter((c) => !c.system.startsWith('nginx') && c.system !== 'sidecar')), [], 'no peers, no lines');
  t.end();
});
