// The kernel probe on the machine running the unit tests. What it must say is worked out
// here independently from the same sources (tcp_available_ulp, the kernel config), so the
// test holds on a kTLS host as well as on one without CONFIG_TLS (like the CI machine), and
// in the host's network namespace as well as in a container's (no tcp_available_ulp there).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadNative, native, nativeStatus } from '../../native/index.js';
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS } from '../../native/crypto-info.js';
import { probeKernel, ulpVerdict } from '../../proxy/ktls/probe.js';
import { kernelCryptoInfoSizes } from '../../proxy/tls/suites.js';
import { availableUlps, kernelConfigTls } from '../helpers/host-ktls.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
// null outside the host network namespace. The module may be loadable (CAP_NET_ADMIN autoload) even when not listed yet.
const ulps = availableUlps();
const noConfigTls = kernelConfigTls() === 'n';

t.test('without CONFIG_TLS: not available, reason kernel_no_config_tls, ENOENT from TCP_ULP', { skip: noConfigTls ? false : 'this kernel has CONFIG_TLS' }, async (t) => {
  const p = await probeKernel({ skipNicOffload: true });
  t.equal(p.available, false);
  t.equal(p.kernelTls, false);
  t.equal(p.rekey, false);
  t.equal(p.reasonIfNot, 'kernel_no_config_tls');
  t.match(p.reasonDetail, /built without CONFIG_TLS/);
  t.equal(p.details.ulp.attach, 'ENOENT');
  t.equal(p.details.ulp.listed, ulps === null ? null : ulps.includes('tls'));
  t.equal(p.details.module.config, 'n');
  t.match(p.details.problems.find((x) => x.what === 'kernel TLS (TCP_ULP "tls")'), { reason: /CONFIG_TLS/, action: /CONFIG_TLS=m or =y/ });
  for (const v of TLS_VERSIONS) {
    for (const c of KERNEL_CIPHERS) {
      for (const d of KTLS_DIRECTIONS) {
        t.equal(p.supports(v, c, d), false, `${v} ${c} ${d} unsupported`);
        t.match(p.reasonFor(v, c, d), /CONFIG_TLS/);
      }
    }
  }
  t.equal(p.details.options.TLS_TX_ZEROCOPY_RO.supported, false);
  t.equal(p.details.tlsStat, null, 'no /proc/net/tls_stat');
});

t.test('with kTLS in the kernel: available, and the ULP attached', { skip: noConfigTls ? 'this kernel lacks CONFIG_TLS' : false }, async (t) => {
  const p = await probeKernel({ skipNicOffload: true });
  t.equal(p.details.ulp.attach === 'ok', p.kernelTls);
  t.equal(p.available, p.details.ciphers.some((c) => c.supported));
});

t.test('without the addon: reason native_unavailable, nothing tried, the file facts still there', async (t) => {
  const p = await probeKernel({ skipNicOffload: true, native: loadNative('/nonexistent/ktls_native.node') });
  t.equal(p.available, false);
  t.equal(p.reasonIfNot, 'native_unavailable');
  t.match(p.reasonDetail, /native kTLS addon is unavailable: .*not built/);
  t.equal(p.details.ulp.attach, 'not_tried');
  t.same(p.details.ulp.availableUlps, ulps);
  t.equal(p.details.native.available, false);
  t.equal(p.details.ciphers.length, 16);
  t.notOk(p.supports('TLSv1.3', 'AES_GCM_128', 'tx'));
  t.match(p.details.problems.find((x) => x.what === 'native addon'), { action: /native\/build\.mjs/ });
});

t.test('a verdict without tcp_available_ulp says why it is missing (a pod never sees it)', (t) => {
  const mod = { loaded: false, autoloadedByProbe: false, builtin: null, file: null, modulesDirVisible: false, config: null, configDevice: null, configSource: null };
  const hidden = /tcp_available_ulp not visible: the kernel shows it only in the host network namespace/;
  t.match(ulpVerdict('ENOENT', '6.8.0', mod, null), { reason: 'kernel_tls_unavailable', detail: hidden });
  t.match(ulpVerdict('EPERM', '6.8.0', mod, null), { reason: 'ulp_refused', detail: hidden });
  t.match(ulpVerdict('ENOENT', '6.8.0', mod, ['mptcp']).detail, /tcp_available_ulp: "mptcp"/);
  t.end();
});

// The probe must answer from the kernel in any network namespace, not from the host's sysctls:
// run it in one of its own (what a pod has: loopback up, no tcp_available_ulp) and compare.
const netnsTry = spawnSync('unshare', ['-n', '--', 'ip', 'link', 'set', 'lo', 'up']);
const skipNetns = netnsTry.status === 0 ? false : `cannot make a network namespace here (unshare -n, ip): ${netnsTry.error?.message ?? netnsTry.stderr.toString().trim()}`;
t.test('in a network namespace of its own (a pod) the probe reaches the same verdict', { skip: skipNetns }, async (t) => {
  const host = await probeKernel({ skipNicOffload: true });
  const summary = (p: typeof host): Record<string, unknown> => ({
    reasonIfNot: p.reasonIfNot,
    attach: p.details.ulp.attach,
    rekey: p.rekey,
    supported: p.details.ciphers.filter((c) => c.supported).map((c) => `${c.version} ${c.cipher} ${c.direction}`),
  });
  const script = [
    "const { probeKernel } = await import('./proxy/ktls/probe.ts');",
    'const p = await probeKernel({ skipNicOffload: true });',
    'const supported = p.details.ciphers.filter((c) => c.supported).map((c) => `${c.version} ${c.cipher} ${c.direction}`);',
    'console.log(JSON.stringify({ reasonIfNot: p.reasonIfNot, attach: p.details.ulp.attach, rekey: p.rekey, supported, ulp: p.details.ulp }));',
  ].join('\n');
  const r = spawnSync('unshare', ['-n', '--', 'sh', '-c', 'ip link set lo up && exec "$0" --import tsx --input-type=module -e "$1"', process.execPath, script], {
    cwd: repo,
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 0, r.stderr);
  const inNs = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown> & { ulp: { availableUlps: unknown; listed: unknown } };
  t.equal(inNs.ulp.availableUlps, null, 'tcp_available_ulp is not visible there');
  t.equal(inNs.ulp.listed, null);
  const { ulp: _ulp, ...rest } = inNs;
  t.same(rest, summary(host), 'same attach answer, reason, rekey and cipher matrix as in this namespace');
});

t.test('NIC offload: honest about what is not visible', async (t) => {
  const ethtool = spawnSync('ethtool', ['--version']);
  const p = await probeKernel();
  if ((ethtool.error as { code?: string } | undefined)?.code === 'ENOENT') {
    t.equal(p.details.nicOffload.visible, false);
    t.match(p.details.nicOffload.note, /not visible: `ethtool` is not installed/);
  } else {
    t.equal(p.details.nicOffload.visible, true);
    t.ok(p.details.nicOffload.interfaces.every((i) => i.name !== 'lo'));
  }
  t.ok(p.details.durationMs > 0, 'the probe timed itself');
});

t.test('the throw-away keys the probe installs have the sizes of the kernel struct (linux/tls.h)', { skip: nativeStatus().available ? false : 'native addon not built' }, (t) => {
  const c = native().constants;
  const structSize: Record<string, number> = {
    AES_GCM_128: c.CRYPTO_INFO_SIZE_AES_GCM_128,
    AES_GCM_256: c.CRYPTO_INFO_SIZE_AES_GCM_256,
    CHACHA20_POLY1305: c.CRYPTO_INFO_SIZE_CHACHA20_POLY1305,
    AES_CCM_128: c.CRYPTO_INFO_SIZE_AES_CCM_128,
  };
  for (const cipher of KERNEL_CIPHERS) {
    const s = kernelCryptoInfoSizes(cipher);
    // struct tls_crypto_info (version, cipher_type: 2 × u16), then iv, key, salt, rec_seq (8).
    t.equal(4 + s.iv + s.key + s.salt + 8, structSize[cipher], cipher);
  }
  t.end();
});
