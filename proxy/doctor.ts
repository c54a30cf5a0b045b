// `ktls-sidecar doctor [--json]`: what this node's kernel can do with kTLS, and for
// every "no" why and what to do. Exit codes (USAGE lists them; docs/deploy.md too):
// 0 when kTLS is usable, 1 when it is not (the sidecar then serves in userspace TLS),
// 2 on a usage error.
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS } from '../native/crypto-info.js';
import { type KernelProbe, probeKernel } from './ktls/probe.js';
import { KTLS_OPTIONS } from '../native/index.js';

const USAGE = `usage: ktls-sidecar doctor [--json]

What this node's kernel can do with kernel TLS (kTLS), and for every "no" why and what to do.
  --json   the same facts as one JSON document

Exit codes:
  0  kTLS is usable: at least one TLS version x cipher x direction can go to the kernel
  1  kTLS is not usable here (the report says why); the sidecar still serves, in userspace TLS
  2  usage error (unknown argument)
`;

export interface DoctorIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

/** The JSON document of `doctor --json`: the summary plus every detail. */
export function doctorJson(probe: KernelProbe): Record<string, unknown> {
  // details.rekey (the full verdict) replaces the summary boolean of the same name.
  return {
    kernelTls: probe.kernelTls,
    available: probe.available,
    reasonIfNot: probe.reasonIfNot,
    reasonDetail: probe.reasonDetail,
    ...probe.details,
  };
}

/** The human report. */
export function doctorText(probe: KernelProbe): string {
  const d = probe.details;
  const lines: string[] = [];
  const row = (k: string, v: string): void => {
    lines.push(`${k.padEnd(22)}${v}`);
  };
  lines.push('ktls-sidecar doctor: kernel TLS on this node', '');
  row('kernel', d.release);
  row('native addon', d.native.available ? `ok (${d.native.path})` : `NO: ${d.native.reason}`);
  const ulpList = d.ulp.availableUlps ? `tcp_available_ulp: ${d.ulp.availableUlps.join(' ') || '(empty)'}` : 'tcp_available_ulp: not visible (host network namespace only)';
  row('tls ULP', `${d.ulp.attach === 'ok' ? 'ok' : d.ulp.attach === 'not_tried' ? 'not tried' : `NO (TCP_ULP "tls" -> ${d.ulp.attach})`}; ${ulpList}`);
  const m = d.module;
  const modParts = [
    m.loaded ? (m.autoloadedByProbe ? 'loaded (just now, by this probe)' : 'loaded') : 'not loaded',
    m.builtin === true ? 'built in' : m.file ? `module file ${m.file}` : m.modulesDirVisible ? 'no tls.ko in /lib/modules' : `/lib/modules/${d.release} not visible`,
    m.config ? `CONFIG_TLS=${m.config} (${m.configSource})` : 'kernel config not visible',
  ];
  row('tls module', modParts.join('; '));
  lines.push('');
  if (probe.available) {
    row('kTLS', 'AVAILABLE');
  } else {
    row('kTLS', `NOT AVAILABLE (${probe.reasonIfNot})`);
    row('', probe.reasonDetail ?? '');
    const action = d.problems.find((p) => p.reason === probe.reasonDetail)?.action;
    if (action) row('', `what to do: ${action}`);
  }
  lines.push('');
  const cols = TLS_VERSIONS.flatMap((v) => KTLS_DIRECTIONS.map((dir) => ({ v, dir, label: `${v} ${dir.toUpperCase()}` })));
  lines.push(`${'cipher'.padEnd(22)}${cols.map((c) => c.label.padEnd(13)).join('')}`.trimEnd());
  for (const cipher of KERNEL_CIPHERS) {
    const cells = cols.map((c) => {
      const e = d.ciphers.find((x) => x.version === c.v && x.cipher === cipher && x.direction === c.dir);
      const cell = e?.supported ? 'yes' : e?.errno ? `no (${e.errno})` : 'no';
      return cell.padEnd(13);
    });
    lines.push(`${cipher.padEnd(22)}${cells.join('')}`.trimEnd());
  }
  lines.push('');
  row('TLS 1.3 rekey', d.rekey.supported ? 'yes' : `no${d.rekey.errno ? ` (${d.rekey.errno})` : ''}: ${d.rekey.reason ?? ''}`);
  row('kTLS RX readiness', d.rxPoll.note);
  for (const opt of KTLS_OPTIONS) {
    const o = d.options[opt];
    row(opt, o.supported ? 'yes' : `no${o.errno ? ` (${o.errno})` : ''}`);
  }
  // Information, never a problem: software kTLS needs no NIC offload, and most NICs have none.
  const nics = d.nicOffload.interfaces.map((i) => `${i.name} tx=${i.tx === null ? '?' : i.tx ? 'yes' : 'no'} rx=${i.rx === null ? '?' : i.rx ? 'yes' : 'no'}`);
  row('NIC TLS offload', `${d.nicOffload.note}${d.nicOffload.visible && nics.length > 0 ? `: ${nics.join(', ')}` : ''} (info: software kTLS does not need it)`);
  row('/proc/net/tls_stat', d.tlsStat ? Object.entries(d.tlsStat).map(([k, v]) => `${k}=${v}`).join(' ') : 'not present (tls module not loaded)');
  if (d.problems.length > 0) {
    lines.push('', 'problems:');
    for (const p of d.problems) lines.push(`  - ${p.what}: ${p.reason}`, `    what to do: ${p.action}`);
  }
  lines.push('', `probe took ${d.durationMs.toFixed(1)} ms`);
  return `${lines.join('\n')}\n`;
}

/** Runs the doctor; returns the exit code (0 kTLS usable, 1 not usable, 2 usage error). */
export async function runDoctor(args: string[], io: DoctorIo = process): Promise<number> {
  let json = false;
  for (const a of args) {
    if (a === '--json') json = true;
    else if (a === '-h' || a === '--help') {
      io.stdout.write(USAGE);
      return 0;
    } else {
      io.stderr.write(`ktls-sidecar doctor: unknown argument ${JSON.stringify(a)}\n${USAGE}`);
      return 2;
    }
  }
  const probe = await probeKernel();
  io.stdout.write(json ? `${JSON.stringify(doctorJson(probe), null, 2)}\n` : doctorText(probe));
  return probe.available ? 0 : 1;
}
