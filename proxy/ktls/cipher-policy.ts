// `ktls.ciphers`: which negotiated suites may go to the kernel, and in which
// direction. Operators write the names they know — IANA
// (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) or OpenSSL
// (`ECDHE-RSA-AES128-GCM-SHA256`) — optionally suffixed `:tx` or `:txrx` to
// override `ktls.direction` for that one suite. Parsed once at config load
// into a lookup the decision consults per connection; a name we do not know is
// an error, never a silent "not offloaded". The parser does not know where its
// text came from: it names the entry, and the config loader names the key.

import { ErrorCodes, SidecarError } from '../errors.js';
import type { KernelCipher } from '../../native/crypto-info.js';
import { allSuites, type CipherSuite } from '../tls/suites.js';
import type { KtlsDirectionSetting } from '../vocabulary.js';

/** A suite the kernel's TLS ULP can hold (AEAD only: the kernel has no CBC/MAC-then-encrypt). */
export type OffloadableSuite = CipherSuite & { readonly kernelCipher: KernelCipher };

// The policy view (names an operator may type → kernel cipher) is the one
// suite table in proxy/tls/suites.ts, so the crypto code, the config check
// and the decision can never disagree about a suite. TLS 1.3 AES-CCM can be
// named but is not in the default set: OpenSSL's own kTLS code refuses it on
// TLS 1.3 ("broken on 5.x kernels").
const SUITES: readonly OffloadableSuite[] = allSuites().filter((s): s is OffloadableSuite => s.kernelCipher !== null);

/** The default `ktls.ciphers`: the AES-GCM suites of TLS 1.3 and TLS 1.2. */
export const DEFAULT_KTLS_CIPHERS: readonly string[] = SUITES.filter(
  (s) => s.kernelCipher === 'AES_GCM_128' || s.kernelCipher === 'AES_GCM_256',
).map((s) => s.ianaName);

const BY_NAME: ReadonlyMap<string, OffloadableSuite> = (() => {
  const m = new Map<string, OffloadableSuite>();
  for (const s of SUITES) {
    m.set(s.ianaName.toUpperCase(), s);
    m.set(s.opensslName.toUpperCase(), s);
  }
  return m;
})();

/** The suite for an IANA or OpenSSL name (case-insensitive), or undefined when kTLS cannot hold it. */
export function findOffloadableSuite(name: string): OffloadableSuite | undefined {
  return BY_NAME.get(name.trim().toUpperCase());
}

/**
 * An entry the policy cannot take: `entry` is its 1-based position, the
 * message says what is wrong with it. Code ERR_KTLS_SIDECAR_CONFIG: a policy
 * only ever comes from configuration.
 */
export class CipherPolicyError extends SidecarError {
  readonly entry: number;

  constructor(entry: number, reason: string) {
    super(ErrorCodes.CONFIG, reason);
    this.entry = entry;
  }
}

export interface CipherPolicyEntry {
  readonly suite: OffloadableSuite;
  /** Per-suite override of `ktls.direction`; undefined = use `ktls.direction`. */
  readonly direction: KtlsDirectionSetting | undefined;
}

export interface CipherPolicy {
  /** The entry for a negotiated suite (IANA or OpenSSL name), or undefined when it is not allowed. */
  lookup(name: string): CipherPolicyEntry | undefined;
  /** Allowed entries in configuration order (for docs, doctor and logs). */
  readonly entries: readonly CipherPolicyEntry[];
}

/**
 * Parse `ktls.ciphers`: an array of entries (config splits the env/flag text
 * on commas). An entry is `NAME` or `NAME:tx` / `NAME:txrx`. Throws
 * CipherPolicyError naming the bad entry.
 * An empty list is valid: nothing is offloaded (`cipher_not_allowed`).
 */
export function parseCipherPolicy(raw: readonly string[]): CipherPolicy {
  const entries: CipherPolicyEntry[] = [];
  const byCode = new Map<number, CipherPolicyEntry>();
  raw.forEach((item, index) => {
    if (typeof item !== 'string') {
      throw new CipherPolicyError(index + 1, `entry ${index + 1} is not a string`);
    }
    const text = item.trim();
    if (text === '') return; // tolerate "a, b," and blank lines
    const { name, direction } = splitDirection(text, index);
    const suite = findOffloadableSuite(name);
    if (!suite) {
      throw new CipherPolicyError(
        index + 1,
        `unknown or non-offloadable cipher "${name}" (entry ${index + 1}); use an IANA name such as ` +
          `TLS_AES_128_GCM_SHA256 or an OpenSSL name such as ECDHE-RSA-AES128-GCM-SHA256 of an AEAD suite ` +
          `(AES-GCM, AES-CCM, ChaCha20-Poly1305)`,
      );
    }
    const previous = byCode.get(suite.code);
    if (previous) {
      // The same suite twice is only an error when the two entries disagree:
      // "which direction wins" must never depend on order.
      if (previous.direction !== direction) {
        throw new CipherPolicyError(
          index + 1,
          `cipher ${suite.ianaName} is listed twice with different directions (entry ${index + 1})`,
        );
      }
      return;
    }
    const entry: CipherPolicyEntry = Object.freeze({ suite, direction });
    byCode.set(suite.code, entry);
    entries.push(entry);
  });
  const frozen = Object.freeze(entries.slice());
  return Object.freeze({
    entries: frozen,
    lookup(name: string): CipherPolicyEntry | undefined {
      const suite = findOffloadableSuite(name);
      return suite ? byCode.get(suite.code) : undefined;
    },
  });
}

function splitDirection(text: string, index: number): { name: string; direction: KtlsDirectionSetting | undefined } {
  const colon = text.lastIndexOf(':');
  if (colon < 0) return { name: text, direction: undefined };
  const suffix = text.slice(colon + 1).trim().toLowerCase();
  const name = text.slice(0, colon).trim();
  if (suffix === 'tx' || suffix === 'txrx') return { name, direction: suffix };
  throw new CipherPolicyError(
    index + 1,
    `entry ${index + 1} "${text}": direction override must be ":tx" or ":txrx", got ":${suffix}"`,
  );
}

/**
 * The already-resolved form proxy/config produces (`config.ktls.ciphers`:
 * one rule per suite with its effective direction). Accepted so the decision
 * can take `config.ktls` as is.
 */
export interface CipherRuleView {
  readonly iana: string;
  readonly direction: KtlsDirectionSetting;
}

export type CipherPolicySource = readonly string[] | readonly CipherRuleView[] | CipherPolicy;

/** Build a policy from resolved rules; the same validation as parseCipherPolicy. */
export function policyFromRules(rules: readonly CipherRuleView[]): CipherPolicy {
  return parseCipherPolicy(rules.map((r) => `${r.iana}:${r.direction}`));
}

// Parsed policies are cached per input so `decide()` can take the config
// value without re-parsing per connection (config objects are frozen, so the
// array identity is a stable key).
const arrayCache = new WeakMap<readonly unknown[], CipherPolicy>();

/** parseCipherPolicy / policyFromRules with a cache: for hot paths handed the config value. */
export function cipherPolicyOf(value: CipherPolicySource): CipherPolicy {
  if (isCipherPolicy(value)) return value;
  let p = arrayCache.get(value);
  if (!p) {
    p = isRuleList(value) ? policyFromRules(value) : parseCipherPolicy(value);
    arrayCache.set(value, p);
  }
  return p;
}

function isCipherPolicy(value: CipherPolicySource): value is CipherPolicy {
  return typeof (value as Partial<CipherPolicy>).lookup === 'function';
}

function isRuleList(value: readonly string[] | readonly CipherRuleView[]): value is readonly CipherRuleView[] {
  return value.length > 0 && typeof value[0] === 'object';
}
