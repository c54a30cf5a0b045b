import t from 'tap';
import { decide, preHandshake, decisionLabels, DECISION_REASONS, INSTALL_FAILED } from '../../proxy/ktls/decision.js';
import type { DecisionInput, KtlsDecisionConfig, KtlsProbeView, HandshakeFactsView, KtlsReason } from '../../proxy/ktls/decision.js';
import { DEFAULT_KTLS_CIPHERS } from '../../proxy/ktls/cipher-policy.js';
import { loadConfig } from '../../proxy/config/index.js';
import type { KernelCipher, KtlsDirection, TlsVersion } from '../../native/crypto-info.js';

// ---- probes: real kernels seen in the lab, as capability tables ----------------------------

function probe(opts: { available?: boolean; rekey?: boolean; tx?: KernelCipher[]; rx?: KernelCipher[] }): KtlsProbeView {
  const tx = new Set(opts.tx ?? []);
  const rx = new Set(opts.rx ?? []);
  return {
    available: opts.available ?? true,
    rekey: opts.rekey ?? false,
    supports: (_v: TlsVersion, c: KernelCipher, d: KtlsDirection) => (d === 'tx' ? tx : rx).has(c),
  };
}
const ALL: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'];
const K61 = probe({ rekey: false, tx: ALL, rx: ALL }); // Debian 6.1: every cipher, no rekey
const K7 = probe({ rekey: true, tx: ALL, rx: ALL }); // 7.x: rekey
const NO_KTLS = probe({ available: false });
const GCM_TX_ONLY = probe({ rekey: true, tx: ['AES_GCM_128', 'AES_GCM_256'], rx: [] });

// ---- facts ---------------------------------------------------------------------------------

const F13 = { tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', kernelCipher: 'AES_GCM_128' } as const;
const F13_256 = { tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', kernelCipher: 'AES_GCM_256' } as const;
const F13_CHACHA = { tlsVersion: 'TLSv1.3', cipher: 'TLS_CHACHA20_POLY1305_SHA256', kernelCipher: 'CHACHA20_POLY1305' } as const;
const F12 = { tlsVersion: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', kernelCipher: 'AES_GCM_128' } as const;
const F12_IANA = { tlsVersion: 'TLSv1.2', cipher: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', kernelCipher: 'AES_GCM_128' } as const;
const F12_CBC = { tlsVersion: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-SHA256', kernelCipher: null } as const;
const F11 = { tlsVersion: 'TLSv1.1', cipher: 'ECDHE-RSA-AES128-SHA', kernelCipher: null } as const;
const F13_CCM8 = { tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_CCM_8_SHA256', kernelCipher: null } as const;

const cfg = (over: Partial<KtlsDecisionConfig> = {}): KtlsDecisionConfig => ({
  direction: 'txrx',
  ciphers: DEFAULT_KTLS_CIPHERS,
  sampleRate: 1,
  forceTls13Rx: false,
  ...over,
});

function input(over: Partial<DecisionInput> = {}): DecisionInput {
  return { flag: true, ktls: cfg(), probe: K7, nativeAvailable: true, draw: 0, facts: F13, ...over };
}

// ---- explicit rows: one per behaviour a user relies on -------------------------------------

type Row = [name: string, input: DecisionInput, mode: 'userspace' | 'tx' | 'txrx', reason: KtlsReason];
const rows: Row[] = [
  ['all green, 7.x, TLS 1.3 → txrx', input(), 'txrx', 'enabled'],
  ['TLS 1.2 on 6.1 → txrx (no rekey needed)', input({ probe: K61, facts: F12 }), 'txrx', 'enabled'],
  ['TLS 1.2 IANA name accepted', input({ probe: K61, facts: F12_IANA }), 'txrx', 'enabled'],
  ['TLS 1.3 on 6.1 → tx only, rekey_unsupported', input({ probe: K61 }), 'tx', 'rekey_unsupported'],
  ['TLS 1.3 on 6.1 with forceTls13Rx → txrx', input({ probe: K61, ktls: cfg({ forceTls13Rx: true }) }), 'txrx', 'enabled'],
  ['direction tx → tx enabled', input({ ktls: cfg({ direction: 'tx' }) }), 'tx', 'enabled'],
  ['direction tx on 6.1 TLS 1.3 → tx enabled (rekey irrelevant)', input({ probe: K61, ktls: cfg({ direction: 'tx' }) }), 'tx', 'enabled'],
  ['flag off wins over everything', input({ flag: false, probe: NO_KTLS, nativeAvailable: false, draw: 0.99, ktls: cfg({ sampleRate: 0 }) }), 'userspace', 'flag_off'],
  ['native unavailable', input({ nativeAvailable: false }), 'userspace', 'native_unavailable'],
  ['native unavailable beats kernel_no_tls', input({ nativeAvailable: false, probe: NO_KTLS }), 'userspace', 'native_unavailable'],
  ['kernel without TLS', input({ probe: NO_KTLS }), 'userspace', 'kernel_no_tls'],
  ['probe not run → kernel_no_tls', input({ probe: null }), 'userspace', 'kernel_no_tls'],
  ['kernel_no_tls beats sampling', input({ probe: NO_KTLS, ktls: cfg({ sampleRate: 0 }) }), 'userspace', 'kernel_no_tls'],
  ['sampleRate 0 → sampled_out', input({ ktls: cfg({ sampleRate: 0 }) }), 'userspace', 'sampled_out'],
  ['draw just below rate → in', input({ ktls: cfg({ sampleRate: 0.5 }), draw: 0.4999 }), 'txrx', 'enabled'],
  ['draw equal to rate → out', input({ ktls: cfg({ sampleRate: 0.5 }), draw: 0.5 }), 'userspace', 'sampled_out'],
  ['sampleRate 1, highest draw → in', input({ draw: 0.9999999 }), 'txrx', 'enabled'],
  ['sampling beats version', input({ ktls: cfg({ sampleRate: 0 }), facts: F11 }), 'userspace', 'sampled_out'],
  ['TLS 1.1 → version_not_offloadable', input({ facts: F11 }), 'userspace', 'version_not_offloadable'],
  ['CBC suite → cipher_not_allowed', input({ facts: F12_CBC }), 'userspace', 'cipher_not_allowed'],
  ['CCM_8 → cipher_not_allowed', input({ facts: F13_CCM8 }), 'userspace', 'cipher_not_allowed'],
  ['ChaCha not in default list → cipher_not_allowed', input({ facts: F13_CHACHA }), 'userspace', 'cipher_not_allowed'],
  ['ChaCha allowed when listed', input({ facts: F13_CHACHA, ktls: cfg({ ciphers: ['TLS_CHACHA20_POLY1305_SHA256'] }) }), 'txrx', 'enabled'],
  ['empty cipher list → nothing offloaded', input({ ktls: cfg({ ciphers: [] }) }), 'userspace', 'cipher_not_allowed'],
  ['per-cipher :tx override beats direction txrx', input({ ktls: cfg({ ciphers: ['TLS_AES_128_GCM_SHA256:tx'] }) }), 'tx', 'enabled'],
  ['per-cipher :txrx override beats direction tx', input({ ktls: cfg({ direction: 'tx', ciphers: ['TLS_AES_128_GCM_SHA256:txrx'] }) }), 'txrx', 'enabled'],
  ['override only applies to its cipher', input({ facts: F13_256, ktls: cfg({ ciphers: ['TLS_AES_128_GCM_SHA256:tx', 'TLS_AES_256_GCM_SHA384'] }) }), 'txrx', 'enabled'],
  ['per-cipher :txrx on 6.1 TLS 1.3 still meets rekey policy', input({ probe: K61, ktls: cfg({ direction: 'tx', ciphers: ['TLS_AES_128_GCM_SHA256:txrx'] }) }), 'tx', 'rekey_unsupported'],
  ['kernel lacks cipher entirely', input({ probe: probe({ rekey: true, tx: ['AES_GCM_256'], rx: ['AES_GCM_256'] }) }), 'userspace', 'kernel_cipher_unsupported'],
  ['kernel lacks RX for cipher → tx', input({ probe: GCM_TX_ONLY }), 'tx', 'kernel_cipher_unsupported'],
  ['kernel lacks RX, direction tx → tx enabled', input({ probe: GCM_TX_ONLY, ktls: cfg({ direction: 'tx' }) }), 'tx', 'enabled'],
  ['RX-unsupported beats rekey reason', input({ probe: probe({ rekey: false, tx: ALL, rx: [] }) }), 'tx', 'kernel_cipher_unsupported'],
  ['version/suite mismatch (1.3 name, 1.2 version) → not allowed', input({ facts: { tlsVersion: 'TLSv1.2', cipher: 'TLS_AES_128_GCM_SHA256', kernelCipher: 'AES_GCM_128' } }), 'userspace', 'cipher_not_allowed'],
  ['TLS 1.2 suite with a :tx override', input({ ktls: cfg({ ciphers: ['ECDHE-RSA-AES128-GCM-SHA256:tx', 'TLS_AES_128_GCM_SHA256'] }), facts: F12, probe: K61 }), 'tx', 'enabled'],
];

for (const [name, inp, mode, reason] of rows) {
  t.test(name, (t) => {
    t.strictSame(decide(inp), { mode, reason });
    t.end();
  });
}

// ---- the whole cross product: invariants that tie the two halves together ------------------

const flags = [true, false];
const natives = [true, false];
const probes: (KtlsProbeView | null)[] = [null, NO_KTLS, K61, K7, GCM_TX_ONLY, probe({ rekey: true, tx: [], rx: [] })];
const samples: [rate: number, draw: number][] = [[1, 0], [1, 0.999], [0, 0], [0.3, 0.2], [0.3, 0.3], [0.3, 0.9]];
const factsList: HandshakeFactsView[] = [F13, F13_256, F13_CHACHA, F12, F12_IANA, F12_CBC, F11, F13_CCM8];
const configs: KtlsDecisionConfig[] = [];
for (const direction of ['tx', 'txrx'] as const) {
  for (const forceTls13Rx of [false, true]) {
    for (const ciphers of [DEFAULT_KTLS_CIPHERS, ['TLS_AES_128_GCM_SHA256:tx', 'ECDHE-RSA-AES128-GCM-SHA256:txrx', 'TLS_CHACHA20_POLY1305_SHA256'], []]) {
      configs.push({ direction, forceTls13Rx, ciphers, sampleRate: 1 });
    }
  }
}

function* everyInput(): Generator<DecisionInput> {
  for (const flag of flags)
    for (const nativeAvailable of natives)
      for (const p of probes)
        for (const [sampleRate, draw] of samples)
          for (const c of configs)
            for (const facts of factsList) yield { flag, nativeAvailable, probe: p, draw, facts, ktls: { ...c, sampleRate } };
}

const PRE_REASONS = new Set<KtlsReason>(['flag_off', 'native_unavailable', 'kernel_no_tls', 'sampled_out']);

t.test('cross product: preHandshake and decide agree on every input', (t) => {
  let n = 0;
  let skipped = 0;
  const bad: string[] = [];
  for (const inp of everyInput()) {
    n++;
    const pre = preHandshake(inp);
    const d = decide(inp);
    if (!pre.engine) {
      skipped++;
      // Skipping the engine is only allowed when the final decision would be userspace for the same reason.
      if (d.mode !== 'userspace' || d.reason !== pre.decision.reason) bad.push(`pre ${pre.decision.reason} vs ${d.mode}/${d.reason}`);
    } else if (PRE_REASONS.has(d.reason)) {
      bad.push(`engine ran but decide says ${d.reason}`);
    }
  }
  t.equal(bad.length, 0, bad.slice(0, 5).join('; '));
  t.ok(n > 5000 && skipped > 0 && skipped < n, `${n} inputs, ${skipped} skip the engine`);
  t.end();
});

t.test('cross product: every result obeys the policy it claims', (t) => {
  const bad: string[] = [];
  const seen = new Set<string>();
  for (const inp of everyInput()) {
    const d = decide(inp);
    seen.add(`${d.mode}/${d.reason}`);
    const off = d.mode === 'userspace';
    if (!DECISION_REASONS.includes(d.reason)) bad.push(`unknown reason ${d.reason}`);
    if (off && d.reason === 'enabled') bad.push('userspace with reason enabled');
    // An offloaded connection says `enabled`, or why it got TX only.
    if (!off && !['enabled', 'rekey_unsupported', 'kernel_cipher_unsupported'].includes(d.reason)) bad.push(`mode ${d.mode} with reason ${d.reason}`);
    if (!off && d.reason !== 'enabled' && d.mode !== 'tx') bad.push(`downgrade reason ${d.reason} with mode ${d.mode}`);
    if (!off) {
      if (!inp.flag || !inp.nativeAvailable || !inp.probe?.available) bad.push('offloaded without flag/native/kernel');
      if (!(inp.draw < inp.ktls.sampleRate)) bad.push('offloaded though sampled out');
      if (inp.facts.kernelCipher === null) bad.push('offloaded a non-AEAD suite');
      if (!inp.probe!.supports(inp.facts.tlsVersion as TlsVersion, inp.facts.kernelCipher!, 'tx')) bad.push('TX cipher unsupported');
    }
    if (d.mode === 'txrx') {
      if (!inp.probe!.supports(inp.facts.tlsVersion as TlsVersion, inp.facts.kernelCipher!, 'rx')) bad.push('RX cipher unsupported');
      if (inp.facts.tlsVersion === 'TLSv1.3' && !inp.probe!.rekey && !inp.ktls.forceTls13Rx) bad.push('TLS 1.3 RX without rekey');
    }
    if (d.reason === 'rekey_unsupported' && (d.mode !== 'tx' || inp.facts.tlsVersion !== 'TLSv1.3')) bad.push('rekey_unsupported misuse');
    if (d.reason === 'install_failed') bad.push('decide never says install_failed');
  }
  t.equal(bad.length, 0, bad.slice(0, 5).join('; '));
  // The table reaches every reason but install_failed (set by the install step).
  for (const r of DECISION_REASONS) if (r !== 'install_failed') t.ok([...seen].some((s) => s.endsWith(`/${r}`)), `reason ${r} reachable`);
  t.ok(seen.has('tx/enabled') && seen.has('txrx/enabled') && seen.has('tx/rekey_unsupported') && seen.has('tx/kernel_cipher_unsupported'));
  t.end();
});

t.test('raising sampleRate never turns an offloaded connection off', (t) => {
  let checked = 0;
  for (const inp of everyInput()) {
    const d = decide(inp);
    if (d.mode === 'userspace') continue;
    const more = decide({ ...inp, ktls: { ...inp.ktls, sampleRate: 1 } });
    t.equal(more.mode === 'userspace', false);
    checked++;
  }
  t.ok(checked > 0);
  t.end();
});

t.test('preHandshake: engine runs only when nothing pre-handshake blocks', (t) => {
  t.strictSame(preHandshake(input()), { engine: true });
  t.strictSame(preHandshake(input({ flag: false })), { engine: false, decision: { mode: 'userspace', reason: 'flag_off' } });
  t.strictSame(preHandshake(input({ probe: null })), { engine: false, decision: { mode: 'userspace', reason: 'kernel_no_tls' } });
  t.strictSame(preHandshake(input({ nativeAvailable: false })), { engine: false, decision: { mode: 'userspace', reason: 'native_unavailable' } });
  t.strictSame(preHandshake(input({ ktls: cfg({ sampleRate: 0.1 }), draw: 0.5 })), { engine: false, decision: { mode: 'userspace', reason: 'sampled_out' } });
  // Per-connection facts are unknown before the handshake: an empty cipher list still runs the engine.
  t.strictSame(preHandshake(input({ ktls: cfg({ ciphers: [] }) })), { engine: true });
  t.end();
});

t.test('a draw outside [0,1) is a caller bug and throws', (t) => {
  for (const draw of [-0.1, 1, 1.5, Number.NaN]) {
    t.throws(() => decide(input({ draw })), RangeError);
    t.throws(() => preHandshake(input({ draw })), RangeError);
  }
  t.end();
});

t.test('decide is pure: same input, same output; input untouched', (t) => {
  const inp = input({ probe: K61 });
  const copy = JSON.stringify({ ...inp, probe: undefined });
  const a = decide(inp);
  const b = decide(inp);
  t.strictSame(a, b);
  t.equal(JSON.stringify({ ...inp, probe: undefined }), copy);
  t.end();
});

t.test('labels', (t) => {
  t.strictSame(decisionLabels({ mode: 'txrx', reason: 'enabled' }), { ktls: 'on', ktls_reason: 'enabled', direction: 'txrx' });
  t.strictSame(decisionLabels({ mode: 'tx', reason: 'rekey_unsupported' }), { ktls: 'on', ktls_reason: 'rekey_unsupported', direction: 'tx' });
  t.strictSame(decisionLabels(INSTALL_FAILED), { ktls: 'off', ktls_reason: 'install_failed', direction: 'none' });
  t.end();
});

t.test('the loaded config.ktls feeds decide() as is (resolved cipher rules, per-cipher override)', (t) => {
  const cfg = loadConfig({
    argv: ['--demo', '--ktls-direction', 'txrx', '--ktls-ciphers', 'TLS_AES_128_GCM_SHA256:tx,ECDHE-RSA-AES128-GCM-SHA256'],
    env: {},
    cwd: process.cwd(),
  });
  const base = { flag: true, probe: K7, nativeAvailable: true, draw: 0 };
  t.strictSame(decide({ ...base, ktls: cfg.ktls, facts: F13 }), { mode: 'tx', reason: 'enabled' });
  t.strictSame(decide({ ...base, ktls: cfg.ktls, facts: F12 }), { mode: 'txrx', reason: 'enabled' });
  t.strictSame(decide({ ...base, ktls: cfg.ktls, facts: F13_256 }), { mode: 'userspace', reason: 'cipher_not_allowed' });
  const defaults = loadConfig({ argv: ['--demo'], env: {}, cwd: process.cwd() });
  // Defaults: direction tx; the AES-GCM suites.
  t.strictSame(decide({ ...base, ktls: defaults.ktls, facts: F13_256 }), { mode: defaults.ktls.direction, reason: 'enabled' });
  t.strictSame(decide({ ...base, ktls: defaults.ktls, facts: F13_CHACHA }), { mode: 'userspace', reason: 'cipher_not_allowed' });
  t.end();
});
