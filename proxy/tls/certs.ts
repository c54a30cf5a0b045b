// Certificate material: reading PEM pairs from disk, making the demo's
// self-signed certificate in memory, and watching files for hot reload.
// Key bytes never go into errors or logs; callers zero the Buffers they drop.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readConfiguredFile, readConfiguredFileStat } from '../config/certs.js';
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

/** Where a private key was read from, for the permission check (no key bytes). */
export interface KeyFileFacts {
  /** Config key of the key file (`tls.key`, `tls.sni[0].key`). */
  readonly keyName: string;
  readonly path: string;
  readonly mode: number;
  readonly gid: number;
}

/** Read a cert/key PEM pair. `keyName` names the config key in the error (`tls.cert`, `tls.sni[0].key`). */
export function readCertPair(certFile: string, keyFile: string, keyName: string): CertPair & { keyFile: KeyFileFacts } {
  const cert = readConfiguredFile(`${keyName}.cert`, certFile);
  const key = readConfiguredFileStat(`${keyName}.key`, keyFile);
  return { cert, key: key.data, keyFile: { keyName: `${keyName}.key`, path: keyFile, mode: key.mode, gid: key.gid } };
}

/** The warn call of a logger (a pino Logger fits). */
export type WarnLog = (obj: object, msg: string) => void;

/** Path+mode pairs already warned about: a reload of the same file must not repeat the line. */
const warnedKeyFiles = new Set<string>();

function ownGroups(): number[] {
  return [...(process.getgroups?.() ?? []), ...(process.getgid ? [process.getgid()] : [])];
}

/**
 * Who besides the owner may use the key, or null. A group bit is fine when
 * the group is one of ours: that is how a non-root container reads a
 * Kubernetes Secret (mode 0440, group = the pod's fsGroup).
 */
function keyExposure(mode: number, gid: number): string | null {
  if ((mode & 0o007) !== 0) return 'accessible to every user';
  if ((mode & 0o070) !== 0 && !ownGroups().includes(gid)) return `accessible to group ${gid}`;
  return null;
}

/**
 * Warn (once per path and mode, for the life of the process) about a private
 * key file that other users can read. Names the key and path, never content.
 */
export function warnIfKeyExposed(facts: KeyFileFacts, warn: WarnLog | undefined): void {
  const exposure = keyExposure(facts.mode, facts.gid);
  if (!exposure || !warn) return;
  const id = `${facts.path}\0${facts.mode}`;
  if (warnedKeyFiles.has(id)) return;
  warnedKeyFiles.add(id);
  const mode = facts.mode.toString(8).padStart(4, '0');
  // `config_key`, not `key`: the logger redacts fields named key.
  warn(
    { event: 'key_file_permissions', config_key: facts.keyName, path: facts.path, mode },
    `${facts.keyName}: private key file ${facts.path} is ${exposure} (mode ${mode}); chmod 600 it`,
  );
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
 * Kubernetes mounts a Secret/ConfigMap as `<mount>/tls.crt -> ..data/tls.crt`
 * and updates it by renaming a new `..data` symlink over the old one: the
 * watched names never change, only this one does.
 */
const KUBERNETES_DATA_LINK = '..data';

/** The basenames worth a reload, per watched directory. */
function namesByDirectory(files: string[]): Map<string, Set<string>> {
  const byDir = new Map<string, Set<string>>();
  for (const file of files) {
    const abs = path.resolve(file);
    const dir = path.dirname(abs);
    const names = byDir.get(dir) ?? new Set([KUBERNETES_DATA_LINK]);
    names.add(path.basename(abs));
    byDir.set(dir, names);
  }
  return byDir;
}

/**
 * Watch certificate files for change and call `onChange` (debounced). Watches
 * the *directories*, not the files: editors and Kubernetes replace files by
 * rename, and Kubernetes swaps a `..data` symlink inside the mounted directory,
 * neither of which a watch on the old inode would see. Events for any other
 * name in those directories (a log file, an editor's swap file) are dropped
 * before the debounce, so they neither cause a reload nor postpone one.
 */
export class CertFileWatcher {
  private readonly watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    files: string[],
    private readonly onChange: () => void,
    private readonly debounceMs = 200,
  ) {
    for (const [dir, names] of namesByDirectory(files)) this.watch(dir, names);
  }

  private watch(dir: string, names: Set<string>): void {
    try {
      const w = fs.watch(dir, { persistent: false }, (_event, filename) => {
        // No name (some platforms): cannot tell, so treat it as relevant.
        if (filename !== null && !names.has(filename)) return;
        this.schedule();
      });
      // A vanished directory must not crash the process; reload then reports it.
      w.on('error', () => undefined);
      this.watchers.push(w);
    } catch {
      // Unwatchable directory (missing, no inotify): SIGHUP still reloads.
    }
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onChange(), this.debounceMs);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
  }
}
