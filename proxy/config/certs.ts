// Certificate checks done at load time, so a bad file is a ConfigError naming
// the key instead of a TLS failure on the first connection. Key bytes are
// read into a Buffer, parsed, and the Buffer is zeroed; nothing about the key
// reaches an error message.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { ConfigError } from '../errors.js';

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

/**
 * Largest file a config key may point at. Certificate chains, keys, CA bundles
 * and config files are kilobytes; the cap stops a path that never ends
 * (`/dev/zero`, a growing file) from eating memory at startup or on reload.
 */
export const MAX_CONFIGURED_FILE_BYTES = 1024 * 1024;

/** A file read through `readConfiguredFileStat`: its bytes and its mode bits. */
export interface ConfiguredFile {
  readonly data: Buffer;
  /** Permission bits (`stat.mode & 0o777`) of the file that was read. */
  readonly mode: number;
  /** Owning group of the file that was read. */
  readonly gid: number;
}

function fileTypeName(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Read at most `limit + 1` bytes of an open regular file: it may grow after
 * fstat, and /proc-style files report size 0. Chunks are zeroed once copied,
 * so no stray copy of a key stays behind.
 */
function readUpTo(fd: number, sizeHint: number, limit: number): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const chunk = Buffer.alloc(Math.min(Math.max(sizeHint - total + 1, 16 * 1024), limit + 1 - total));
    const n = readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    chunks.push(chunk.subarray(0, n));
    total += n;
    if (total > limit) break;
  }
  const data = Buffer.concat(chunks, total);
  for (const c of chunks) c.fill(0);
  return data;
}

function readOpenFile(key: string, path: string, fd: number): ConfiguredFile {
  const st = fstatSync(fd);
  // EISDIR keeps the errno wording readFileSync used for a directory.
  if (st.isDirectory()) throw new ConfigError(key, `cannot read ${path} (EISDIR)`);
  if (!st.isFile()) throw new ConfigError(key, `${path} is ${fileTypeName(st)}; point it at a regular file`);
  if (st.size > MAX_CONFIGURED_FILE_BYTES) throw new ConfigError(key, `${path} is larger than 1 MiB (${st.size} bytes)`);
  const data = readUpTo(fd, st.size, MAX_CONFIGURED_FILE_BYTES);
  if (data.length > MAX_CONFIGURED_FILE_BYTES) {
    data.fill(0);
    throw new ConfigError(key, `${path} is larger than 1 MiB (it grew while being read)`);
  }
  return { data, mode: st.mode & 0o777, gid: st.gid };
}

/**
 * Read a file a config key points at, with its mode. The one place such reads
 * fail: the error names the key, the path and the reason (errno code, file
 * type, size), never the contents. Only regular files up to 1 MiB are read:
 * the open is non-blocking so a FIFO without a writer cannot hang us, and
 * fstat then refuses it (and character devices such as /dev/zero).
 */
export function readConfiguredFileStat(key: string, path: string): ConfiguredFile {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(key, `cannot read ${path} (${code})`, { cause: err });
  }
  try {
    return readOpenFile(key, path, fd);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(key, `cannot read ${path} (${code})`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** Read a file a config key points at (see `readConfiguredFileStat`). */
export function readConfiguredFile(key: string, path: string): Buffer {
  return readConfiguredFileStat(key, path).data;
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
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
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
