// The kernel probe against a real kTLS kernel (lab VM): its answers must match what the
// kernel actually does when the same combinations are installed independently here.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { native } from '../../native/index.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { parseTlsStat } from '../../proxy/ktls/tls-stat.js';
import { runDoctor } from '../../proxy/doctor.js';
import type { KernelCipher, KtlsDirection, TlsVersion } from '../../native/crypto-info.js';
import { availableUlps } from '../helpers/host-ktls.js';
import { cryptoInfo, knownKeys } from './helpers/records.js';
import { kernelHasRekey, skipOutsideLab, tcpPair } from './helpers/sockets.js';

const VERSIONS: TlsVersion[] = ['TLSv1.2', 'TLSv1.3'];
const CIPHERS: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'];
const DIRS: KtlsDirection[] = ['tx', 'rx'];

async function kernelAccepts(version: TlsVersion, cipher: KernelCipher, dir: KtlsDirection): Promise<boolean> {
  const n = native();
  const p = await tcpPair();
  try {
    const fd = dir === 'tx' ? p.cfd : p.sfd;
    n.attachUlp(fd);
    n.setCryptoInfo(fd, dir, cryptoInfo(knownKeys(version, cipher)));
    return true;
  } catch {
    return false;
  } finally {
    p.close();
  }
}

t.test('the probe finds kTLS available, and every combination matches a real install', { skip: skipOutsideLab }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.equal(probe.available, true, `available (reason: ${probe.reasonDetail})`);
  t.equal(probe.kernelTls, true);
  t.equal(probe.reasonIfNot, null);
  t.equal(probe.details.ulp.attach, 'ok');
  // tcp_available_ulp exists only in the host network namespace (null in any other).
  t.equal(probe.details.ulp.listed, availableUlps() === null ? null : true, 'tcp_available_ulp lists tls where it is visible');
  t.equal(probe.details.module.loaded, true, '/sys/module/tls exists');
  for (const v of VERSIONS) {
    for (const c of CIPHERS) {
      for (const d of DIRS) {
        const real = await kernelAccepts(v, c, d);
        t.equal(probe.supports(v, c, d), real, `${v} ${c} ${d}: probe ${probe.supports(v, c, d)}, kernel ${real}`);
        if (!real) t.type(probe.reasonFor(v, c, d), 'string', 'a refusal carries its reason');
      }
    }
  }
  t.comment(`probe took ${probe.details.durationMs.toFixed(1)} ms`);
});

t.test('the probe rekey answer matches the kernel', { skip: skipOutsideLab }, async (t) => {
  const n = native();
  const p = await tcpPair();
  t.teardown(() => p.close());
  n.attachUlp(p.cfd);
  n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(knownKeys('TLSv1.3', 'AES_GCM_128')));
  let real = true;
  try {
    n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(knownKeys('TLSv1.3', 'AES_GCM_128', 1)));
  } catch {
    real = false;
  }
  const probe = await probeKernel({ skipNicOffload: true });
  t.comment(`probe (crypto modules already loaded) took ${probe.details.durationMs.toFixed(1)} ms`);
  t.equal(probe.rekey, real, `probe ${probe.rekey}, kernel ${real}`);
  t.equal(real, kernelHasRekey(), 'rekey exactly on >= 6.14');
});

t.test('the probe options answer matches the kernel', { skip: skipOutsideLab }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  // Both options exist since 6.0; the lab kernels are 6.1 and 7.x.
  t.equal(probe.details.options.TLS_TX_ZEROCOPY_RO.supported, true);
  t.equal(probe.details.options.TLS_RX_EXPECT_NO_PAD.supported, true);
});

t.test('tls_stat: every line of /proc/net/tls_stat is parsed, and the probe reports it', { skip: skipOutsideLab }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const text = readFileSync('/proc/net/tls_stat', 'utf8');
  const names = text.split('\n').filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)[0]);
  const parsed = parseTlsStat(text);
  t.same(Object.keys(parsed), names, 'all counters, in order');
  t.ok(names.includes('TlsTxSw') && names.includes('TlsDecryptError'));
  t.equal(names.includes('TlsTxRekeyOk'), kernelHasRekey(), 'rekey counters exactly on >= 6.14');
  t.same(Object.keys(probe.details.tlsStat ?? {}), names);
  t.ok((probe.details.tlsStat?.['TlsTxSw'] ?? 0) > 0, 'the probe itself installed TX contexts');
});

t.test('doctor exits 0 and says AVAILABLE', { skip: skipOutsideLab }, async (t) => {
  let out = '';
  const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (out += s) } };
  t.equal(await runDoctor([], io), 0);
  t.match(out, /kTLS\s+AVAILABLE/);
  let json = '';
  t.equal(await runDoctor(['--json'], { stdout: { write: (s: string) => (json += s) }, stderr: io.stderr }), 0);
  const doc = JSON.parse(json) as { available: boolean; ciphers: unknown[] };
  t.equal(doc.available, true);
  t.equal(doc.ciphers.length, 16);
});
