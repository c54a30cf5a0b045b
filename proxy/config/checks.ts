// The checks convict's per-key formats cannot make: values that must agree
// with each other (ports, cert and key), names other parts must understand
// (OpenSSL's cipher lists, the kTLS cipher policy, SNI host names) and files
// that must hold what they claim (certificates, keys, CA bundles). Each failure
// is a ConfigError naming the key.

import { createSecureContext } from 'node:tls';
import { ConfigError } from '../errors.js';
import { CipherPolicyError, parseCipherPolicy, type CipherPolicy } from '../ktls/cipher-policy.js';
import type { KtlsDirectionSetting } from '../vocabulary.js';
import { checkCaBundle, checkKeyPair, type CertificateSummary } from './certs.js';
import type { Config, KtlsCipherRule, SniCertificate } from './schema.js';

/** What convict returns once validated: the Config before the checks resolve `ktls.ciphers`. */
export interface RawConfig {
  listen: { host: string; port: number };
  mode: Config['mode'];
  upstream: Config['upstream'];
  demo: boolean;
  tls: Omit<Config['tls'], 'sni'> & { sni: SniCertificate[] };
  admin: Config['admin'];
  log: Config['log'];
  shutdown: Config['shutdown'];
  timeouts: Config['timeouts'];
  limits: Config['limits'];
  ktls: Omit<Config['ktls'], 'ciphers'> & { ciphers: string[] };
  config: Config['config'];
}

/** ` (set by <layer>)` for a key set by a file, env variable or flag; '' for a default. */
export function describeOrigin(key: string, origins: Map<string, string>): string {
  const o = origins.get(key);
  return o ? ` (set by ${o})` : '';
}

const SERVERNAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function checkCipherLists(ciphers: string, ciphersuites: string): void {
  try {
    createSecureContext({ ciphers });
  } catch {
    throw new ConfigError('tls.ciphers', `"${ciphers}" matches no cipher OpenSSL knows`);
  }
  for (const suite of ciphersuites.split(':')) {
    if (!suite.startsWith('TLS_')) throw new ConfigError('tls.ciphersuites', `"${suite}" is not a TLS 1.3 suite name (TLS_...)`);
    try {
      createSecureContext({ ciphers: suite });
    } catch {
      throw new ConfigError('tls.ciphersuites', `"${suite}" is not a TLS 1.3 suite OpenSSL knows`);
    }
  }
}

/** Resolve `ktls.ciphers` with the kTLS policy parser; a bad entry is a ConfigError on the key. */
function cipherRules(entries: readonly string[], direction: KtlsDirectionSetting): KtlsCipherRule[] {
  let policy: CipherPolicy;
  try {
    policy = parseCipherPolicy(entries);
  } catch (err) {
    if (err instanceof CipherPolicyError) throw new ConfigError('ktls.ciphers', err.message, { cause: err });
    throw err;
  }
  return policy.entries.map((e) => ({
    iana: e.suite.iana,
    openssl: e.suite.openssl,
    version: e.suite.version,
    kernelCipher: e.suite.kernelCipher,
    direction: e.direction ?? direction,
  }));
}

/** Check `raw` (paths already absolute); returns what the checks resolved. */
export function checkValues(raw: RawConfig, origins: Map<string, string>): { ciphers: KtlsCipherRule[]; certificates: CertificateSummary[] } {
  if (raw.limits.maxConnections < 1) throw new ConfigError('limits.maxConnections', 'must be at least 1' + describeOrigin('limits.maxConnections', origins));
  if (raw.upstream.maxSockets < 1) throw new ConfigError('upstream.maxSockets', 'must be at least 1' + describeOrigin('upstream.maxSockets', origins));
  if (raw.limits.maxConcurrentStreams < 1) {
    throw new ConfigError('limits.maxConcurrentStreams', 'must be at least 1' + describeOrigin('limits.maxConcurrentStreams', origins));
  }
  // Same port on overlapping addresses: the second listen() would fail at
  // runtime with EADDRINUSE; say which keys collide instead.
  const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::';
  if (
    raw.listen.port !== 0 &&
    raw.listen.port === raw.admin.port &&
    (raw.listen.host === raw.admin.host || wildcard(raw.listen.host) || wildcard(raw.admin.host))
  ) {
    throw new ConfigError('admin.port', `${raw.admin.port} is also listen.port; the admin server needs its own port`);
  }
  checkCipherLists(raw.tls.ciphers, raw.tls.ciphersuites);
  const ciphers = cipherRules(raw.ktls.ciphers, raw.ktls.direction);

  const certificates: CertificateSummary[] = [];
  if (raw.tls.cert === '' || raw.tls.key === '') {
    if (raw.tls.cert !== '' || raw.tls.key !== '') {
      const missing = raw.tls.cert === '' ? 'tls.cert' : 'tls.key';
      throw new ConfigError(missing, `required when ${missing === 'tls.cert' ? 'tls.key' : 'tls.cert'} is set`);
    }
    if (!raw.demo) throw new ConfigError('tls.cert', 'required (a PEM certificate file) unless --demo is set');
  } else {
    certificates.push(checkKeyPair('*', 'tls.cert', raw.tls.cert, 'tls.key', raw.tls.key));
  }
  const seen = new Set<string>();
  raw.tls.sni.forEach((s, i) => {
    if (!SERVERNAME.test(s.servername)) throw new ConfigError(`tls.sni[${i}].servername`, `"${s.servername}" is not a host name`);
    if (seen.has(s.servername)) throw new ConfigError(`tls.sni[${i}].servername`, `"${s.servername}" is listed twice`);
    seen.add(s.servername);
    certificates.push(checkKeyPair(s.servername, `tls.sni[${i}].cert`, s.cert, `tls.sni[${i}].key`, s.key));
  });
  if (raw.tls.clientCA !== '') checkCaBundle('tls.clientCA', raw.tls.clientCA);

  return { ciphers, certificates };
}
