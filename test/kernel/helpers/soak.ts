// Clients and process probes for the kernel-lab soak and hardening tests
// (test/kernel/soak-*.test.ts, hardening-*.test.ts): one download or echo per
// NEW connection, pinned to one suite, hashed as it streams (8 MiB bodies are
// never held whole), and the fd count / RSS of a child sidecar from /proc.
// (Compiled for the lab VM: node: imports and the other lab helpers only.)
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { patternBytes, sha256 } from '../../helpers/upstream.js';
import type { Suite } from './sidecar-lab.js';

const H2_WINDOW = 8 * 1024 * 1024;

/** node:tls options that make the client offer exactly this suite and version. */
export function suiteTlsOptions(s: Suite): Pick<tls.ConnectionOptions, 'minVersion' | 'maxVersion' | 'ciphers'> {
  return { minVersion: s.version, maxVersion: s.version, ciphers: s.openssl };
}

export interface Fetched {
  status: number;
  length: number;
  sha256: string;
}

/** Hash a stream of chunks as they come. */
function hasher(): { update(d: Buffer): void; seen(): number; done(status: number): Fetched } {
  const h = createHash('sha256');
  let length = 0;
  return {
    update: (d) => {
      length += d.length;
      h.update(d);
    },
    seen: () => length,
    done: (status) => ({ status, length, sha256: h.digest('hex') }),
  };
}

/** Reject after `ms` with a message naming what hung (the socket is destroyed by `onTimeout`). */
function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void, seen?: () => number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what}: no end after ${ms} ms${seen ? ` (${seen()} B received)` : ''}`));
    }, ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** GET `path` over HTTP/1.1 on a new connection with this suite. */
export function h1Get(port: number, ca: Buffer, s: Suite, path: string, timeoutMs: number): Promise<Fetched> {
  let req: ReturnType<typeof https.request> | undefined;
  const h = hasher();
  const p = new Promise<Fetched>((resolve, reject) => {
    req = https.request({ host: '127.0.0.1', port, path, servername: 'localhost', ca, agent: false, ...suiteTlsOptions(s) }, (res) => {
      res.on('data', (d: Buffer) => h.update(d));
      res.on('end', () => (res.complete ? resolve(h.done(res.statusCode ?? 0)) : reject(new Error('response incomplete'))));
      res.on('error', reject);
      res.on('close', () => reject(new Error(`response closed after ${res.complete ? 'the end' : 'a partial body'}`)));
    });
    // The client port names the connection in the sidecar's connection_closed line ("remote").
    let localPort: number | undefined;
    req.on('socket', (sock) => sock.once('connect', () => (localPort = sock.localPort)));
    req.on('error', (err) => reject(new Error(`${err.message} (client port ${localPort ?? '?'})`)));
    req.end();
  });
  return withTimeout(p, timeoutMs, `h1 ${path}`, () => req?.destroy(), () => h.seen());
}

/** GET `path` over HTTP/2 on a new session with this suite; the session is closed after. */
export function h2Get(port: number, ca: Buffer, s: Suite, path: string, timeoutMs: number): Promise<Fetched> {
  const session = h2Session(port, ca, s);
  const h = hasher();
  const p = new Promise<Fetched>((resolve, reject) => {
    session.on('error', reject);
    const req = session.request({ ':path': path });
    let status = 0;
    req.on('response', (headers) => (status = Number(headers[':status'] ?? 0)));
    req.on('data', (d: Buffer) => h.update(d));
    req.on('end', () => resolve(h.done(status)));
    req.on('error', (err: Error) => reject(h.seen() === 0 && notProcessed(req) ? new NotProcessedError(path) : err));
    // A stream reset by the server (or a session torn down) closes without 'end': that is a failure,
    // unless the server said it never processed the stream (then a client may retry it).
    req.on('close', () => reject(h.seen() === 0 && notProcessed(req) ? new NotProcessedError(path) : new Error(`stream closed without an end (rst code ${req.rstCode})`)));
    req.end();
  });
  return withTimeout(p, timeoutMs, `h2 ${path}`, () => session.destroy(), () => h.seen()).finally(() => session.close());
}

/** An HTTP/2 request the server did not process: safe to retry (RFC 9113 §8.7). */
export class NotProcessedError extends Error {
  constructor(path: string) {
    super(`h2 ${path}: refused before processing (GOAWAY below its stream id, or REFUSED_STREAM)`);
  }
}

// The last GOAWAY each client session received: a kTLS drain (flag off) sends one.
const goaways = new WeakMap<http2.ClientHttp2Session, number>();

/**
 * True when the server said this stream was never processed: REFUSED_STREAM,
 * or a GOAWAY whose last-stream-id is below the stream's id. That is the race
 * a kTLS drain's GOAWAY has with a request sent at the same moment, which
 * RFC 9113 §8.7 lets any client retry; it is not a lost response.
 */
function notProcessed(req: http2.ClientHttp2Stream): boolean {
  if (req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) return true;
  const last = goaways.get(req.session as http2.ClientHttp2Session);
  return last !== undefined && (req.id === undefined || req.id > last);
}

/**
 * A new HTTP/2 session with this suite and the receive windows a download
 * client uses (curl: 32 MiB): node's 64 KiB default would make an 8 MiB body
 * crawl under TCG, flow control rather than the sidecar setting the pace.
 */
export function h2Session(port: number, ca: Buffer, s: Suite): http2.ClientHttp2Session {
  const session = http2.connect(`https://127.0.0.1:${port}`, { servername: 'localhost', ca, settings: { initialWindowSize: H2_WINDOW }, ...suiteTlsOptions(s) });
  session.once('connect', () => session.setLocalWindowSize(2 * H2_WINDOW));
  session.on('goaway', (_code: number, lastStreamID: number) => goaways.set(session, lastStreamID));
  return session;
}

/**
 * A client that gives up mid-download: GET `path` (HTTP/2 or HTTP/1.1, new
 * connection, this suite) and tear the connection down once `after` body bytes
 * arrived, while the sidecar is still writing. Resolves with the bytes seen
 * (what a real client closing a tab or timing out does; the sidecar must
 * survive it whatever record layer the connection has).
 */
export function abandonGet(port: number, ca: Buffer, s: Suite, path: string, h2: boolean, after: number, timeoutMs: number): Promise<number> {
  let kill: () => void = () => undefined;
  const p = new Promise<number>((resolve, reject) => {
    let seen = 0;
    const onData = (d: Buffer): void => {
      seen += d.length;
      if (seen >= after) {
        kill();
        resolve(seen);
      }
    };
    if (h2) {
      const session = h2Session(port, ca, s);
      kill = () => session.destroy();
      session.on('error', () => undefined);
      const req = session.request({ ':path': path });
      req.on('error', () => undefined);
      req.on('data', onData);
      // Refused before processing (a drain's GOAWAY): nothing was sent to abandon, nothing lost.
      req.on('close', () => (seen === 0 && notProcessed(req) ? resolve(0) : reject(new Error(`h2 stream closed after ${seen} B, before ${after} B`))));
      req.end();
    } else {
      const req = https.request({ host: '127.0.0.1', port, path, servername: 'localhost', ca, agent: false, ...suiteTlsOptions(s) }, (res) => {
        res.on('data', onData);
        res.on('error', () => undefined);
        res.on('close', () => reject(new Error(`h1 response closed after ${seen} B, before ${after} B`)));
      });
      kill = () => req.destroy();
      req.on('error', () => undefined);
      req.end();
    }
  });
  return withTimeout(p, timeoutMs, `abandoned ${path}`, () => kill()).finally(() => kill());
}

/**
 * tcp mode against an echo upstream (test/helpers/tcp-upstream.ts): send
 * `data` on a new connection with this suite, read the echo, half-close, and
 * expect the upstream's '<upstream-bye>' then the end. Resolves with what came back.
 */
export function tcpEcho(port: number, ca: Buffer, s: Suite, data: Buffer, timeoutMs: number): Promise<Buffer> {
  const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = { host: '127.0.0.1', port, servername: 'localhost', ca, allowHalfOpen: true, ...suiteTlsOptions(s) };
  const sock = tls.connect(options);
  const p = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let ended = false;
    sock.on('error', reject);
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      // Half-close only once the echo is back: a FIN before the sidecar installs kTLS is another test (ktls-early-fin).
      if (!ended && received >= data.length) {
        ended = true;
        sock.end();
      }
    });
    sock.on('end', () => resolve(Buffer.concat(chunks)));
    sock.on('close', () => reject(new Error(`closed after ${received} B without an end`)));
    sock.once('secureConnect', () => sock.write(data));
  });
  return withTimeout(p, timeoutMs, 'tcp echo', () => sock.destroy()).finally(() => sock.destroy());
}

/** What a tcp echo of `data` must give back: the data, then the upstream's bye. */
export function echoMatches(data: Buffer, got: Buffer): boolean {
  const bye = Buffer.from('<upstream-bye>');
  return got.length === data.length + bye.length && sha256(got.subarray(0, data.length)) === sha256(data) && got.subarray(data.length).equals(bye);
}

/** The sha256 the test upstream's /bytes?n=N body has. */
export function bytesSha(n: number): string {
  return sha256(patternBytes(n, 7));
}

export interface ProcStats {
  fds: number;
  rssKiB: number;
}

/** Open fds and resident memory of a process (Linux /proc). */
export function procStats(pid: number): ProcStats {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { fds, rssKiB: Number(m?.[1] ?? NaN) };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `f` until it returns true or `timeoutMs` passes; resolves with the last answer. */
export async function waitUntil(f: () => Promise<boolean> | boolean, timeoutMs: number, stepMs = 250): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await f()) return true;
    if (Date.now() >= end) return false;
    await sleep(stepMs);
  }
}

/** True when the lab booted a kernel of major version >= 7 (the long soak runs there only). */
export function labKernelAtLeast7(): boolean {
  const major = Number((process.env['KTLS_LAB_KVER'] ?? '').split('.')[0]);
  return Number.isFinite(major) && major >= 7;
}
