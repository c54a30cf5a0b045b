// The one place that knows kTLS policy. A pure function of
//   (flag, ktls config, kernel probe, native addon, handshake facts, draw)
// → { mode, reason }. No I/O, no clock, no randomness: the caller draws one
// number per connection and passes it to both halves below, so the
// pre-handshake shortcut and the final decision can never disagree.
//
// The table is an ordered list of rules; the first rule that fires decides
// the reason. Rules marked `pre` need nothing from the handshake, so
// `preHandshake()` can evaluate exactly those and tell the listener to skip
// the handshake engine (plain Node TLSSocket, faster) when kTLS is impossible
// anyway. `decide()` evaluates the same rules, then the post-handshake ones.

import type { KernelCipher, KtlsDirection, TlsVersion } from '../../native/crypto-info.js';
import { cipherPolicyOf, type CipherPolicySource } from './cipher-policy.js';
import { KTLS_REASONS, type KtlsDirectionSetting, type KtlsMode, type KtlsReason as AnyKtlsReason } from '../vocabulary.js';

/**
 * The reasons the decision gives (a subset of `KTLS_REASONS` in
 * proxy/vocabulary.ts, the one list the metrics and docs read). `enabled` is
 * the only reason of an offloaded connection with its full requested
 * direction; a connection can be `tx` with `rekey_unsupported` or
 * `kernel_cipher_unsupported` when only RX was refused.
 */
export type KtlsReason = Exclude<AnyKtlsReason, 'handoff_failed' | 'not_attempted' | 'other'>;
export const DECISION_REASONS = KTLS_REASONS.filter(
  (r): r is KtlsReason => r !== 'handoff_failed' && r !== 'not_attempted' && r !== 'other',
);

export interface KtlsDecision {
  readonly mode: KtlsMode;
  readonly reason: KtlsReason;
}

/** What the decision needs from the kernel probe (`KernelProbe` of proxy/ktls/probe.ts fits as is). */
export interface KtlsProbeView {
  /** kTLS works for at least one version × cipher × direction (ULP attachable, a key accepted). */
  readonly available: boolean;
  /** A second setsockopt(TLS_TX/TLS_RX) works: TLS 1.3 KeyUpdate can be followed (Linux >= 6.14). */
  readonly rekey: boolean;
  supports(version: TlsVersion, cipher: KernelCipher, direction: KtlsDirection): boolean;
}

/** The `ktls.*` keys the decision reads (a superset, e.g. the whole frozen `config.ktls`, is fine). */
export interface KtlsDecisionConfig {
  readonly direction: KtlsDirectionSetting;
  /** `config.ktls.ciphers` (resolved rules), raw entries, or a parsed policy; parsed once and cached. */
  readonly ciphers: CipherPolicySource;
  /** Fraction of eligible connections offloaded, 0..1. */
  readonly sampleRate: number;
  /** Put TLS 1.3 RX in the kernel even when it cannot follow a KeyUpdate (the connection then ends on one). */
  readonly forceTls13Rx: boolean;
}

export interface HandshakeFactsView {
  /** `getProtocol()` spelling: 'TLSv1.3', 'TLSv1.2', 'TLSv1.1', … */
  readonly tlsVersion: string;
  /** Negotiated suite, IANA or OpenSSL name. */
  readonly cipher: string;
  /** The kernel's name for the suite's AEAD, or null when kTLS cannot hold it (CBC, CCM_8, …). */
  readonly kernelCipher: KernelCipher | null;
}

export interface PreHandshakeInput {
  /**
   * The runtime flag (proxy/ktls/flag.ts). `ktls.enabled` is only its start
   * value: PUT /ktls must be able to turn kTLS on even if the file said off,
   * so the decision reads the flag alone.
   */
  readonly flag: boolean;
  readonly ktls: KtlsDecisionConfig;
  /** null when the probe has not run (or could not run): treated as no kernel TLS. */
  readonly probe: KtlsProbeView | null;
  readonly nativeAvailable: boolean;
  /** One uniform draw in [0, 1) per connection; offloaded when draw < sampleRate. */
  readonly draw: number;
}

export interface DecisionInput extends PreHandshakeInput {
  readonly facts: HandshakeFactsView;
}

export type PreHandshakeResult =
  /** kTLS is possible: run the handshake engine (which can hand off), then call decide(). */
  | { readonly engine: true }
  /** kTLS is impossible whatever the handshake says: use Node's TLSSocket; label with `decision`. */
  | { readonly engine: false; readonly decision: KtlsDecision };

interface Rule {
  readonly reason: Exclude<KtlsReason, 'enabled' | 'install_failed'>;
  /** `pre` rules read nothing from the handshake. */
  readonly stage: 'pre' | 'post';
  /** True when this rule keeps the connection in userspace. */
  readonly blocks: (input: DecisionInput, suite: SuiteView) => boolean;
}

/** The facts rules need after parsing, computed once per decide(). */
interface SuiteView {
  readonly version: TlsVersion | null;
  readonly direction: KtlsDirectionSetting | null; // null: cipher not allowed
  readonly kernelCipher: KernelCipher | null;
}

/**
 * THE table. Order is precedence: the operator's switch first, then what the
 * host lacks (so a host without kTLS says so on every connection, whatever
 * the sample), then sampling, then per-connection facts.
 */
const RULES: readonly Rule[] = [
  { reason: 'flag_off', stage: 'pre', blocks: (i) => !i.flag },
  { reason: 'native_unavailable', stage: 'pre', blocks: (i) => !i.nativeAvailable },
  { reason: 'kernel_no_tls', stage: 'pre', blocks: (i) => !i.probe?.available },
  { reason: 'sampled_out', stage: 'pre', blocks: (i) => !(i.draw < i.ktls.sampleRate) },
  { reason: 'version_not_offloadable', stage: 'post', blocks: (_i, s) => s.version === null },
  { reason: 'cipher_not_allowed', stage: 'post', blocks: (_i, s) => s.direction === null || s.kernelCipher === null },
  {
    reason: 'kernel_cipher_unsupported',
    stage: 'post',
    // TX is the minimum offload; RX-only is never offered.
    blocks: (i, s) => !i.probe!.supports(s.version!, s.kernelCipher!, 'tx'),
  },
];

const PRE_RULES = RULES.filter((r) => r.stage === 'pre');

function checkDraw(draw: number): void {
  // A bad draw is a caller bug; failing loudly beats silently sampling everything in or out.
  if (!(draw >= 0 && draw < 1)) throw new RangeError(`kTLS sample draw must be in [0, 1), got ${draw}`);
}

/** Before the handshake: can this connection possibly be offloaded? */
export function preHandshake(input: PreHandshakeInput): PreHandshakeResult {
  checkDraw(input.draw);
  for (const rule of PRE_RULES) {
    // Pre rules never look at facts or the suite view.
    if (rule.blocks(input as DecisionInput, NO_SUITE)) {
      return { engine: false, decision: { mode: 'userspace', reason: rule.reason } };
    }
  }
  return { engine: true };
}

const NO_SUITE: SuiteView = { version: null, direction: null, kernelCipher: null };

/** After the handshake: the record layer for this connection and why. */
export function decide(input: DecisionInput): KtlsDecision {
  checkDraw(input.draw);
  const suite = suiteView(input);
  for (const rule of RULES) {
    if (rule.blocks(input, suite)) return { mode: 'userspace', reason: rule.reason };
  }
  // Offloadable: TX goes to the kernel. RX too when asked for and possible.
  const probe = input.probe!; // kernel_no_tls fired otherwise
  const version = suite.version!;
  const kernelCipher = suite.kernelCipher!;
  if (suite.direction === 'tx') return { mode: 'tx', reason: 'enabled' };
  if (!probe.supports(version, kernelCipher, 'rx')) return { mode: 'tx', reason: 'kernel_cipher_unsupported' };
  // A TLS 1.3 peer may send KeyUpdate at any time; with RX in a kernel that
  // cannot rekey, that ends the connection. Keep RX in JS unless forced.
  if (version === 'TLSv1.3' && !probe.rekey && !input.ktls.forceTls13Rx) {
    return { mode: 'tx', reason: 'rekey_unsupported' };
  }
  return { mode: 'txrx', reason: 'enabled' };
}

function suiteView(input: DecisionInput): SuiteView {
  const { facts } = input;
  const version = facts.tlsVersion === 'TLSv1.3' || facts.tlsVersion === 'TLSv1.2' ? facts.tlsVersion : null;
  if (version === null) return NO_SUITE;
  const entry = cipherPolicyOf(input.ktls.ciphers).lookup(facts.cipher);
  // A suite is allowed only in the version it belongs to (a TLS 1.3 suite
  // name with a TLS 1.2 version would be an engine bug: stay in userspace).
  if (!entry || entry.suite.version !== version) return { version, direction: null, kernelCipher: facts.kernelCipher };
  return { version, direction: entry.direction ?? input.ktls.direction, kernelCipher: facts.kernelCipher };
}

/** The decision after a failed install before any key was set: JS record layer, counted. */
export const INSTALL_FAILED: KtlsDecision = Object.freeze({ mode: 'userspace', reason: 'install_failed' });

/** Metric/log labels of a decision (`direction` is the kTLS direction, `none` in userspace). */
export function decisionLabels(d: KtlsDecision): { ktls: 'on' | 'off'; ktls_reason: KtlsReason; direction: 'tx' | 'txrx' | 'none' } {
  return {
    ktls: d.mode === 'userspace' ? 'off' : 'on',
    ktls_reason: d.reason,
    direction: d.mode === 'userspace' ? 'none' : d.mode,
  };
}
