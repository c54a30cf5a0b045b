// Certificate checks done at load time, so a bad file is a ConfigError naming
// the key instead of a TLS failure on the first connection. Key bytes are
// read into a Buffer, parsed, and the Buffer is zeroed; nothing about the key
// reaches an error message.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { ConfigError } from '../errors.js';
import { distinguishedName, readConfiguredFile } from '../tls/certs.js';

export interface CertificateSummary {
  /** The servername the certificate serves: `*` for the default certificate (tls.cert). */
  readonly servername: string;
  /** Config key it came from, e.g. `tls.cert` or `tls.sni[0].cert`. */
  readonly key: string;
  readonly path: string;
  readonly subject: string;
  readonly issuer: string;
  /** Subject alternative names, as Node prints them (`DNS:a.example, IP Address:127.0.0.1`). */
  readonly subjectAltName: string;
  readonly serialNumber: string;
  readonly fingerprint256: string;
  /** Expiry, milliseconds since the epoch. */
  readonly notAfter: number;
  readonly notBefore: number;
}

function firstCertificate(key: string, path: string, pem: Buffer): X509Certificate {
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(key, `${path} holds no PEM certificate`);
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(key, `${path} is not a valid PEM certificate`, { cause: err });
  }
}

function summarize(servername: string, key: string, path: string, cert: X509Certificate): CertificateSummary {
  return {
    servername,
    key,
    path,
    subject: distinguishedName(cert.subject),
    issuer: distinguishedName(cert.issuer),
    subjectAltName: cert.subjectAltName ?? '',
    serialNumber: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    notAfter: Date.parse(cert.validTo),
    notBefore: Date.parse(cert.validFrom),
  };
}

/**
 * Check a certificate/key pair: both readable, the certificate a valid PEM,
 * the key an unencrypted PEM private key matching the certificate's public key.
 */
export function checkKeyPair(
  servername: string,
  certKey: string,
  certPath: string,
  keyKey: string,
  keyPath: string,
): CertificateSummary {
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
  return summarize(servername, certKey, certPath, cert);
}

/** Check a CA bundle: readable and holding at least one valid certificate. */
export function checkCaBundle(key: string, path: string): void {
  firstCertificate(key, path, readConfiguredFile(key, path));
}
