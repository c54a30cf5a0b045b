// Certificate material: reading PEM pairs from disk, making the demo's
// self-signed certificate in memory, and watching files for hot reload.
// Key bytes never go into errors or logs; callers zero the Buffers they drop.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readConfiguredFile } from '../config/certs.js';
import { ErrorCodes, SidecarError } from '../errors.js';

export interface CertPair {
  cert: Buffer;
  key: Buffer;
}

/** Non-secret facts about a certificate, for logs and XFCC `By=`. */
export interface CertSummary {
  subject: string;
  /** SHA-256 of the DER, lowercase hex. */
  sha256: string;
  notAfter: string;
  /** First URI SAN (e.g. a SPIFFE ID), or ''. */
  uri: string;
}

/** Read a cert/key PEM pair. `keyName` names the config key in the error (`tls.cert`, `tls.sni[0].key`). */
export function readCertPair(certFile: string, keyFile: string, keyName: string): CertPair {
  const cert = readConfiguredFile(`${keyName}.cert`, certFile);
  return { cert, key: readConfiguredFile(`${keyName}.key`, keyFile) };
}

/** Summarise the first certificate of a PEM chain. Throws on unparsable input. */
export function summarizeCert(pem: Buffer | string): CertSummary {
  const x = new X509Certificate(pem);
  const uri = /URI:([^,\s]+)/.exec(x.subjectAltName ?? '')?.[1] ?? '';
  return {
    subject: x.subject.split('\n').join(','),
    sha256: createHash('sha256').update(x.raw).digest('hex'),
    notAfter: x.validTo,
    uri,
  };
}

/**
 * A throwaway self-signed P-256 certificate for `--demo`, made by the openssl
 * CLI. openssl cannot write a key to a pipe (/dev/stdout on a socket is
 * ENXIO), so the key passes through a private (0700) temp directory that is
 * overwritten and removed at once; from then on it lives only in memory.
 * Valid for localhost, 127.0.0.1 and ::1 plus any extra DNS names.
 */
export function generateSelfSigned(extraNames: string[] = []): CertPair {
  const dns = ['localhost', ...extraNames.filter((n) => !/^[\d.:]+$/.test(n))];
  const san = [...dns.map((n) => `DNS:${n}`), 'IP:127.0.0.1', 'IP:::1'].join(',');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-demo-'));
  fs.chmodSync(dir, 0o700);
  const keyFile = path.join(dir, 'key.pem');
  try {
    let cert: Buffer;
    try {
      cert = execFileSync(
        'openssl',
        [
          'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
          '-days', '30', '-subj', '/CN=ktls-sidecar demo (self-signed)', '-addext', `subjectAltName=${san}`,
          '-keyout', keyFile,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 },
      );
    } catch (err) {
      const first = (err as Error).message.split('\n')[0] ?? '';
      throw new SidecarError(ErrorCodes.CONFIG, `demo certificate: running openssl failed (${first}); install openssl or pass --tls-cert/--tls-key`);
    }
    const key = fs.readFileSync(keyFile);
    if (!cert.includes('-----BEGIN CERTIFICATE-----') || !key.includes('PRIVATE KEY-----')) {
      throw new SidecarError(ErrorCodes.CONFIG, 'demo certificate: openssl printed no certificate/key');
    }
    return { cert, key };
  } finally {
    try {
      const size = fs.statSync(keyFile).size;
      fs.writeFileSync(keyFile, Buffer.alloc(size));
    } catch {
      // no key file was written
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Watch certificate files for change and call `onChange` (debounced). Watches
 * the *directories*, not the files: editors and Kubernetes replace files by
 * rename, and Kubernetes swaps a `..data` symlink inside the mounted directory,
 * neither of which a watch on the old inode would see.
 */
export class CertFileWatcher {
  private readonly watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(files: string[], onChange: () => void, debounceMs = 200) {
    const dirs = new Set(files.map((f) => path.dirname(path.resolve(f))));
    for (const dir of dirs) {
      try {
        const w = fs.watch(dir, { persistent: false }, () => {
          if (this.closed) return;
          if (this.timer) clearTimeout(this.timer);
          this.timer = setTimeout(onChange, debounceMs);
          this.timer.unref();
        });
        // A vanished directory must not crash the process; reload then reports it.
        w.on('error', () => undefined);
        this.watchers.push(w);
      } catch {
        // Unwatchable directory (missing, no inotify): SIGHUP still reloads.
      }
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
  }
}
