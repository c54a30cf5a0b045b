// Certificate material: reading the files config keys name (PEM pairs, CA
// bundles, the config file itself) with a size cap, summarising certificates,
// making the demo's self-signed certificate in memory, and watching files for
// hot reload. Key bytes never go into errors or logs; callers zero the Buffers
// they drop.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import fs, { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, ErrorCodes, SidecarError } from '../errors.js';

export interface CertPair {
  cert: Buffer;
  key: Buffer;
}

/**
 * Non-secret facts about a certificate: the one summary the startup and reload
 * logs, the expiry metric, /readyz and XFCC `By=` read. Subject and issuer are
 * in `distinguishedName` form.
 */
export interface CertSummary {
  readonly subject: string;
  readonly issuer: string;
  /** Subject alternative names, as Node prints them (`DNS:a.example, IP Address:127.0.0.1`), or ''. */
  readonly subjectAltName: string;
  /** First URI SAN (e.g. a SPIFFE ID), or ''. */
  readonly uri: string;
  readonly serialNumber: string;
  /** `AB:CD:…`, as Node prints it. */
  readonly fingerprint256: string;
  /** SHA-256 of the DER, lowercase hex. */
  readonly sha256: string;
  /** Expiry as Node prints it (`Jan  1 00:00:00 2027 GMT`). */
  readonly notAfter: string;
  /** Expiry, milliseconds since the epoch. */
  readonly notAfterMs: number;
  /** Start of validity, milliseconds since the epoch. */
  readonly notBeforeMs: number;
}

/** Where a private key was read from, for the permission check (no key bytes). */
export interface KeyFileFacts {
  /** Config key of the key file (`tls.key`, `tls.sni[0].key`). */
  readonly keyName: string;
  readonly path: string;
  readonly mode: number;
  readonly gid: number;
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

/**
 * Who besides the owner may use the key, or null. A group bit is fine when
 * the group is one of ours: that is how a non-root container reads a
 * Kubernetes Secret (mode 0440, group = the pod's fsGroup).
 */
function keyExposure(mode: number, gid: number): string | null {
  if ((mode & 0o007) !== 0) return 'accessible to every user';
  const ownGroups = [...(process.getgroups?.() ?? []), ...(process.getgid ? [process.getgid()] : [])];
  if ((mode & 0o070) !== 0 && !ownGroups.includes(gid)) return `accessible to group ${gid}`;
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

/**
 * A distinguished name as X509Certificate prints it (one `key=value` RDN per
 * line) on one line: RDNs joined by ','. The one format of subjects and issuers
 * in logs, metric labels and XFCC.
 */
export function distinguishedName(text: string): string {
  return text.split('\n').filter(Boolean).join(',');
}

/** Summarise a certificate, or the first one of a PEM chain. Throws on unparsable input. */
export function summarizeCert(cert: X509Certificate | Buffer | string): CertSummary {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  const san = x.subjectAltName ?? '';
  return {
    subject: distinguishedName(x.subject),
    issuer: distinguishedName(x.issuer),
    subjectAltName: san,
    uri: /URI:([^,\s]+)/.exec(san)?.[1] ?? '',
    serialNumber: x.serialNumber,
    fingerprint256: x.fingerprint256,
    sha256: createHash('sha256').update(x.raw).digest('hex'),
    notAfter: x.validTo,
    notAfterMs: Date.parse(x.validTo),
    notBeforeMs: Date.parse(x.validFrom),
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
