// The checks convict's per-key formats cannot make: values that must agree
// with each other (ports, cert and key), names other parts must understand
// (OpenSSL's cipher lists, the kTLS cipher policy, SNI host names) and files
// that must hold what they claim (certificates, keys, CA bundles). Each failure
// is a ConfigError naming the key, so a bad file fails the load instead of the
// first connection. Key bytes are read into a Buffer, parsed, and the Buffer is
// zeroed; nothing about the key reaches an error message.

import convict from 'convict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../errors.js';
import { CipherPolicyError, parseCipherPolicy, type CipherPolicy } from '../ktls/cipher-policy.js';
import type { KtlsDirectionSetting } from '../vocabulary.js';
import { readConfiguredFile, summarizeCert, type CertSummary } from '../tls/certs.js';
import { type Config, type KtlsCipherRule, parseLogConnections } from './schema.js';

/** Most worker processes `workers` accepts (a sidecar never needs more; a typo like 400 is caught). */
export const MAX_WORKERS = 64;

// The `workers` format: `auto` or a whole number 1..MAX_WORKERS; env and flag
// text (`2`) becomes a number. Registered with convict when this module loads,
// before any config is validated (load.ts imports it).
convict.addFormat({
  name: 'workers',
  validate(v: unknown) {
    if (v === 'auto') return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_WORKERS) {
      throw new Error(`must be auto or a whole number from 1 to ${MAX_WORKERS}`);
    }
  },
  coerce(v: string) {
    const s = v.trim();
    return /^\d+$/.test(s) ? Number(s) : s;
  },
});

// The `log.connections` format: all | errors | off | sample:<rate> (schema.ts parses it).
convict.addFormat({
  name: 'log-connections',
  validate(v: unknown) {
    const parsed = parseLogConnections(v);
    if (typeof parsed === 'string') throw new Error(parsed);
  },
  coerce(v: string) {
    return v.trim();
  },
});

/** What convict returns once validated: the Config before the checks resolve `ktls.ciphers`. */
export type RawConfig = { -readonly [K in Exclude<keyof Config, 'ktls'>]: Config[K] } & {
  ktls: Omit<Config['ktls'], 'ciphers'> & { ciphers: string[] };
};

/** A certificate a config key names: where it came from, and its summary. */
export interface ConfiguredCertificate extends CertSummary {
  /** The servername the certificate serves: `*` for the default certificate (tls.cert). */
  readonly servername: string;
  /** Config key it came from, e.g. `tls.cert` or `tls.sni[0].cert`. */
  readonly key: string;
  readonly path: string;
}

function firstCertificate(key: string, path: string, pem: Buffer): X509Certificate {
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(key, `${path} holds no PEM certificate`);
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(key, `${path} is not a valid PEM certificate`, { cause: err });
  }
}

/**
 * Check a certificate/key pair: both readable, the certificate a valid PEM,
 * the key an unencrypted PEM private key matching the certificate's public key.
 */
function checkKeyPair(
  servername: string,
  certKey: string,
  certPath: string,
  keyKey: string,
  keyPath: string,
): ConfiguredCertificate {
  const cert = firstCertificate(certKey, certPath, readConfiguredFile(certKey, certPath));
  const keyPem = readConfiguredFile(keyKey, keyPath);
  try {
    let privateKey;
    try {
      privateKey = createPrivateKey(keyPem);
    } catch (err) {
      const encrypted = keyPem.includes('ENCRYPTED');
      throw new ConfigError(
        keyKey,
        encrypted ? `${keyPath} is an encrypted key (not supported; store it unencrypted in a secret)` : `${keyPath} is not a valid PEM private key`,
        { cause: err },
      );
    }
    if (!cert.checkPrivateKey(privateKey)) {
      throw new ConfigError(keyKey, `${keyPath} does not match the certificate in ${certPath} (${certKey})`);
    }
  } finally {
    keyPem.fill(0);
  }
  return { ...summarizeCert(cert), servername, key: certKey, path: certPath };
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
    iana: e.suite.ianaName,
    openssl: e.suite.opensslName,
    version: e.suite.version,
    kernelCipher: e.suite.kernelCipher,
    direction: e.direction ?? direction,
  }));
}

/** Check `raw` (paths already absolute); returns what the checks resolved. */
export function checkValues(raw: RawConfig, origins: Map<string, string>): { ciphers: KtlsCipherRule[]; certificates: ConfiguredCertificate[] } {
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

  const certificates: ConfiguredCertificate[] = [];
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
  // The CA bundle: readable and holding at least one valid certificate.
  if (raw.tls.clientCA !== '') firstCertificate('tls.clientCA', raw.tls.clientCA, readConfiguredFile('tls.clientCA', raw.tls.clientCA));

  return { ciphers, certificates };
}
