// The kernel lab itself (test/lab/): did it boot the kernel it claims, with working kTLS?
//
// Runs inside the lab VM (`npm run test:kernel`), where run-in-vm.sh sets KTLS_LAB=1,
// KTLS_LAB_KERNEL (the requested spec, e.g. "7.x" or "6.1") and KTLS_LAB_KVER (the
// release it unpacked and booted). On any other machine these tests are skipped: the
// host kernel may have no kTLS at all, and loading modules needs root.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';

const inLab = process.env['KTLS_LAB'] === '1';
const skip = inLab ? false : 'not in the kernel lab VM (run `npm run test:kernel`)';
const spec = process.env['KTLS_LAB_KERNEL'] ?? '';
const expectedRelease = process.env['KTLS_LAB_KVER'] ?? '';

/** "7.3.4+deb13-amd64" -> [7, 3, 4]; "6.1.0-50-amd64" -> [6, 1, 0]. */
function versionOf(rel: string): number[] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(rel);
  if (!m) throw new Error(`not a kernel release: ${rel}`);
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

function atLeast(rel: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = versionOf(rel);
  return a > major || (a === major && b >= minor);
}

/** Runs the system's modprobe (it sits in /sbin, which a caller's PATH may lack). */
function modprobe(module: string): { status: number | null; output: string } {
  const bin = ['/sbin/modprobe', '/usr/sbin/modprobe'].find((p) => existsSync(p)) ?? 'modprobe';
  const r = spawnSync(bin, [module], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}` };
}

t.test('the VM runs the kernel release the lab unpacked and booted', { skip }, (t) => {
  t.not(expectedRelease, '', 'run-in-vm.sh exported KTLS_LAB_KVER');
  t.equal(release(), expectedRelease);
  t.end();
});

t.test('the kernel line matches the requested spec', { skip }, (t) => {
  // 7.x is there for TLS 1.3 rekey in kTLS (Linux >= 6.14); 6.1 is Debian 12's own line.
  if (['7.x', 'latest', 'rekey', 'trixie-backports'].includes(spec)) {
    t.ok(atLeast(release(), 6, 14), `${release()} >= 6.14`);
  } else if (['6.1', 'bookworm', 'debian12'].includes(spec)) {
    t.match(release(), /^6\.1\.\d+-\d+-amd64$/, 'a Debian 12 6.1 kernel');
  } else {
    t.pass(`no expectation for spec "${spec}" beyond the release check`);
  }
  t.end();
});

t.test('modprobe tls succeeds', { skip }, (t) => {
  const r = modprobe('tls');
  t.equal(r.status, 0, r.output || 'modprobe tls');
  t.end();
});

t.test('tcp_available_ulp lists tls once the module is loaded', { skip }, (t) => {
  t.equal(modprobe('tls').status, 0, 'modprobe tls');
  const ulps = readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').trim().split(/\s+/);
  t.ok(ulps.includes('tls'), `tcp_available_ulp: ${ulps.join(' ')}`);
  t.end();
});

t.test('/proc/net/tls_stat is readable and counts software kTLS', { skip }, (t) => {
  t.equal(modprobe('tls').status, 0, 'modprobe tls');
  const stat = readFileSync('/proc/net/tls_stat', 'utf8');
  t.match(stat, /^TlsCurrTxSw\s+\d+$/m);
  t.match(stat, /^TlsRxSw\s+\d+$/m);
  t.end();
});

t.test('tls_stat has the rekey counters exactly when the kernel is >= 6.14', { skip }, (t) => {
  t.equal(modprobe('tls').status, 0, 'modprobe tls');
  const stat = readFileSync('/proc/net/tls_stat', 'utf8');
  t.equal(/^TlsTxRekeyOk\s+\d+$/m.test(stat), atLeast(release(), 6, 14), `release ${release()}`);
  t.end();
});
