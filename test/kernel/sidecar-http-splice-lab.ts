// The origin, the client and the shared cases of the HTTP splice lab tests
// (sidecar-http-splice*.test.ts). Origin and client speak HTTP/1.1 by hand,
// so a test decides exactly when each byte leaves and sees exactly what
// arrived.
//
// Origin (raw TCP, keep-alive, requests served in order), GET or HEAD:
//   /bytes/N[?gap=MS&seed=S]  200, Content-Length N, patternBytes(N, S). With
//                             gap, the head goes alone and the body MS ms
//                             later: the sidecar then reads the head without
//                             body bytes, so every body byte can be spliced.
//   /chunked/N                the same bytes, chunked (never spliced)
//   /slow/N?ms=MS             Content-Length N, 64 KiB every MS ms
//   /rst/N                    Content-Length N, half the body, then a TCP RST
//   /fin/N                    Content-Length N, half the body, then FIN
// It counts its connections (a spliced body must leave a pooled socket in
// step for the next request).
import type { Test } from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { KernelProbe } from '../../proxy/ktls/probe.js';
import { metricValue } from '../helpers/metrics.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { expectedDirection } from './helpers/sidecar-matrix.js';
import { type LabSidecar, type Suite, SUITES, closeField, labPki, startLabSidecar, tlsStat } from './helpers/sidecar-lab.js';

const KIB = 1024;
const MIB = 1024 * KIB;
/** ktls.spliceMinBody in these tests (the default). */
export const T = 64 * KIB;
/** The origin's pause between a head and its body: long enough for the sidecar to read the head alone. */
export const GAP = 'gap=300';

/** patternBytes and its sha, made once per (size, seed). */
const bodies = new Map<string, { body: Buffer; sha: string }>();
export function bodyOf(n: number, seed = 7): { body: Buffer; sha: string } {
  const key = `${n}/${seed}`;
  let b = bodies.get(key);
  if (!b) {
    const body = patternBytes(n, seed);
    b = { body, sha: sha256(body) };
    bodies.set(key, b);
  }
  return b;
}

export interface Origin {
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Sockets open now. */
  open(): number;
  close(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function writeAll(s: net.Socket, b: Buffer): Promise<void> {
  for (let i = 0; i < b.length && !s.destroyed; i += 256 * KIB) {
    if (!s.write(b.subarray(i, i + 256 * KIB))) await new Promise((r) => s.once('drain', r));
  }
}

async function serve(s: net.Socket, method: string, target: string): Promise<void> {
  const u = new URL(target, 'http://origin');
  const [, kind, size] = u.pathname.split('/');
  const n = Number(size ?? 0);
  const seed = Number(u.searchParams.get('seed') ?? 7);
  const head = (extra: string): string => `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n${extra}\r\n`;
  const { body } = bodyOf(n, seed);
  const headOnly = method === 'HEAD';
  switch (kind) {
    case 'bytes': {
      const gap = Number(u.searchParams.get('gap') ?? 0);
      s.write(head(`Content-Length: ${n}\r\n`));
      if (headOnly) return;
      if (gap > 0) await sleep(gap);
      return writeAll(s, body);
    }
    case 'chunked': {
      s.write(head('Transfer-Encoding: chunked\r\n'));
      if (headOnly) return;
      for (let i = 0; i < n; i += 64 * KIB) {
        const c = body.subarray(i, i + 64 * KIB);
        s.write(`${c.length.toString(16)}\r\n`);
        s.write(c);
        s.write('\r\n');
      }
      s.write('0\r\n\r\n');
      return;
    }
    case 'slow': {
      const ms = Number(u.searchParams.get('ms') ?? 20);
      s.write(head(`Content-Length: ${n}\r\n`));
      for (let i = 0; i < n && !s.destroyed; i += 64 * KIB) {
        await sleep(ms);
        s.write(body.subarray(i, i + 64 * KIB));
      }
      return;
    }
    case 'rst':
    case 'fin': {
      s.write(head(`Content-Length: ${n}\r\n`));
      await sleep(30);
      await writeAll(s, body.subarray(0, n >> 1));
      await sleep(100);
      if (kind === 'rst') s.resetAndDestroy();
      else s.end();
      return;
    }
    default:
      s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  }
}

export async function startOrigin(t: { teardown(fn: () => unknown): void }): Promise<Origin> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    let chain = Promise.resolve();
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const [method = 'GET', target = '/'] = (buf.slice(0, buf.indexOf('\r\n')) ?? '').split(' ');
        buf = buf.slice(end + 4);
        chain = chain.then(() => serve(s, method, target)).catch(() => {
          s.destroy();
        });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const close = (): void => {
    server.close();
    for (const s of sockets) s.destroy();
  };
  t.teardown(close);
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections, open: () => sockets.size, close };
}

// ---- client ----------------------------------------------------------------------------

export interface Got {
  status: number;
  headers: Record<string, string>;
  bytes: number;
  sha: string;
  /** Bytes on the wire: head and body (chunk framing included). */
  wire: number;
}

/**
 * One client connection that reads HTTP/1.1 responses by hand (Content-Length
 * or chunked), in order, hashing each body.
 */
export class Client {
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  ended = false;
  error: Error | null = null;

  private constructor(
    readonly socket: tls.TLSSocket,
    private readonly raw: net.Socket,
  ) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.poke();
    });
    socket.on('end', () => {
      this.ended = true;
      this.poke();
    });
    socket.on('error', (err: Error) => {
      this.error = err;
      this.poke();
    });
    socket.on('close', () => {
      this.ended = true;
      this.poke();
    });
  }

  /** TLS over a TCP socket of ours: reset() sends a real RST (a TLSSocket has no resetAndDestroy). */
  static async connect(port: number, opts: tls.ConnectionOptions): Promise<Client> {
    const raw = net.connect({ host: '127.0.0.1', port });
    raw.on('error', () => undefined);
    const socket = tls.connect({ socket: raw, servername: 'localhost', ...opts });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return new Client(socket, raw);
  }

  /** A TCP RST to the sidecar, now. */
  reset(): void {
    this.raw.resetAndDestroy();
    this.socket.destroy();
  }

  send(method: string, path: string): void {
    this.socket.write(`${method} ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async need(n: number): Promise<void> {
    while (this.buf.length < n) {
      if (this.ended || this.error) throw new Error(`connection ended with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** Bytes taken from the connection so far. */
  taken = 0;

  private take(n: number): Buffer {
    this.taken += Math.min(n, this.buf.length);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  private async line(): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf('\r\n');
      if (i >= 0) return this.take(i + 2).toString('latin1', 0, i);
      await this.need(this.buf.length + 1);
    }
  }

  /** The next response; `onBody` sees the body bytes as they come. A short body rejects with what came. */
  async response(method = 'GET', onBody?: (received: number) => void): Promise<Got> {
    const taken0 = this.taken;
    const status = Number((await this.line()).split(' ')[1]);
    const headers: Record<string, string> = {};
    for (let l = await this.line(); l !== ''; l = await this.line()) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const h = createHash('sha256');
    let bytes = 0;
    const eat = async (n: number): Promise<void> => {
      while (n > 0) {
        if (this.buf.length === 0) await this.need(1);
        const c = this.take(Math.min(n, this.buf.length));
        h.update(c);
        bytes += c.length;
        n -= c.length;
        onBody?.(bytes);
      }
    };
    if (method !== 'HEAD' && headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const size = parseInt(await this.line(), 16);
        if (size === 0) {
          await this.line();
          break;
        }
        await eat(size);
        await this.line();
      }
    } else if (method !== 'HEAD') {
      await eat(Number(headers['content-length'] ?? 0));
    }
    return { status, headers, bytes, sha: h.digest('hex'), wire: this.taken - taken0 };
  }

  /** Resolves once the server ended or closed the connection. */
  async closed(): Promise<void> {
    while (!this.ended) await new Promise<void>((r) => (this.wake = r));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---- cases ------------------------------------------------------------------------------

export function tlsOptions(s: Suite): tls.ConnectionOptions {
  return { ca: readFileSync(labPki().caCert), minVersion: s.version, maxVersion: s.version, ciphers: s.openssl };
}

export async function sentCounts(sc: LabSidecar): Promise<{ sent: number; spliced: number }> {
  const text = await sc.metrics();
  return { sent: metricValue(text, 'ktls_sidecar_bytes_sent_total', { ktls: 'on' }), spliced: metricValue(text, 'ktls_sidecar_bytes_spliced_sent_total', { ktls: 'on' }) };
}

export async function startHttpSidecar(t: Test, origin: Origin, ktls: Record<string, unknown>): Promise<LabSidecar> {
  return startLabSidecar(t, {
    mode: 'http',
    upstream: { url: `http://127.0.0.1:${origin.port}` },
    log: { level: 'info', connections: 'all' },
    ktls: { enabled: true, ...ktls },
  });
}

/**
 * A request on `c`, its response checked byte-exact; returns the spliced
 * bytes it added. Every byte the client took is counted as sent, spliced or not.
 */
export async function fetchChecked(t: Test, sc: LabSidecar, c: Client, method: string, path: string, n: number, seed = 7): Promise<number> {
  const before = await sentCounts(sc);
  c.send(method, path);
  const got = await c.response(method);
  t.equal(got.status, 200, `${method} ${path}: 200`);
  t.equal(got.bytes, method === 'HEAD' ? 0 : n, `${method} ${path}: every body byte`);
  if (method !== 'HEAD') t.equal(got.sha, bodyOf(n, seed).sha, `${method} ${path}: byte-exact`);
  if (!path.startsWith('/chunked')) {
    t.equal(got.headers['content-length'], String(n), 'the upstream\'s Content-Length');
    t.notOk(got.headers['transfer-encoding'], 'no Transfer-Encoding on a Content-Length body');
  }
  const after = await sentCounts(sc);
  t.equal(after.sent - before.sent, got.wire, 'bytes_sent_total: every byte the client got, spliced or not');
  return after.spliced - before.spliced;
}

function closeLines(sc: LabSidecar): Array<Record<string, unknown>> {
  return sc.logs.filter((l) => l.event === 'connection_closed');
}

/** One keep-alive connection mixing spliced and JS bodies. */
export async function suiteOnOneConnection(t: Test, sc: LabSidecar, s: Suite, direction: string): Promise<void> {
  const stat0 = tlsStat();
  const closedBefore = closeLines(sc).length;
  const c = await Client.connect(sc.tlsPort, tlsOptions(s));
  let total = 0;
  const check = async (method: string, path: string, n: number, expected: number | 'some'): Promise<void> => {
    const d = await fetchChecked(t, sc, c, method, path, n);
    total += d;
    if (expected === 'some') t.ok(d > 0 && d <= n && n - d <= 256 * KIB, `${path}: spliced ${d} of ${n} (the rest came with the head, through JS)`);
    else t.equal(d, expected, `${method} ${path}: ${expected} bytes spliced`);
  };
  await check('GET', `/bytes/0?${GAP}`, 0, 0);
  await check('GET', `/bytes/${T - 1}?${GAP}`, T - 1, 0);
  await check('GET', `/bytes/${T}?${GAP}`, T, T);
  await check('GET', '/bytes/100', 100, 0);
  await check('HEAD', `/bytes/${MIB}`, MIB, 0);
  await check('GET', `/chunked/${256 * KIB}`, 256 * KIB, 0);
  await check('GET', `/bytes/${MIB}?${GAP}`, MIB, MIB);
  await check('GET', `/bytes/${MIB}`, MIB, 'some');
  await check('GET', `/bytes/${T + 1}?${GAP}`, T + 1, T + 1);
  c.socket.end();
  await c.closed();
  const line = await sc.waitForLog((l) => l.event === 'connection_closed' && closeLines(sc).indexOf(l) >= closedBefore, 30_000);
  t.equal(closeField(line, 'bytes_out_spliced'), total, 'close line: bytes_out_spliced is what the counter added');
  t.equal(line['ktls'], 'on', 'a kTLS connection');
  const stat1 = tlsStat();
  t.ok((stat1['TlsTxSw'] ?? 0) > (stat0['TlsTxSw'] ?? 0), 'kernel TX installed (tls_stat)');
  if (direction === 'txrx') t.ok((stat1['TlsRxSw'] ?? 0) > (stat0['TlsRxSw'] ?? 0), 'kernel RX installed (tls_stat)');
  t.equal(stat1['TlsDecryptError'] ?? 0, stat0['TlsDecryptError'] ?? 0, 'no decrypt error in the kernel');
}

/** Every suite the kernel holds in `mode` on one sidecar, then the pooled socket's reuse. */
export async function runMode(t: Test, probe: KernelProbe, origin: Origin, mode: 'tx' | 'txrx'): Promise<void> {
  const suites = SUITES.filter((s) => probe.supports(s.version, s.kernel, 'tx'));
  t.ok(suites.length >= 2, `suites: ${suites.map((s) => s.iana).join(', ')}`);
  const sc = await startHttpSidecar(t, origin, { direction: mode, ciphers: suites.map((s) => s.iana), splice: true, spliceMinBody: T });
  for (const s of suites) {
    const direction = expectedDirection(probe, s, mode);
    await t.test(`${s.iana} ${s.version} ${mode} (${direction})`, (t) => suiteOnOneConnection(t, sc, s, direction));
  }
  const connections = origin.connections();
  await t.test('the upstream socket is reused after spliced bodies (nothing read past a body)', async (t) => {
    const c = await Client.connect(sc.tlsPort, tlsOptions(suites[0]!));
    for (let i = 0; i < 3; i++) t.equal(await fetchChecked(t, sc, c, 'GET', `/bytes/${T * 2}?${GAP}`, T * 2), T * 2, 'spliced');
    c.destroy();
    t.ok(origin.connections() - connections <= 1, `origin connections opened: ${origin.connections() - connections}`);
  });
}

/** 64 MiB on one suite in `mode`, all of it spliced. */
export async function bigBody(t: Test, probe: KernelProbe, origin: Origin, mode: 'tx' | 'txrx', s: Suite): Promise<void> {
  const sc = await startHttpSidecar(t, origin, { direction: mode, ciphers: [s.iana], splice: true, spliceMinBody: T });
  const c = await Client.connect(sc.tlsPort, tlsOptions(s));
  t.equal(await fetchChecked(t, sc, c, 'GET', `/bytes/${64 * MIB}?${GAP}`, 64 * MIB), 64 * MIB, `all 64 MiB spliced (${expectedDirection(probe, s, mode)})`);
  c.destroy();
  await sc.stop();
}

// ---- faults -----------------------------------------------------------------------------

const TLS13: tls.ConnectionOptions = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' };

/**
 * The sidecar's open fds less the empty pipes its splice pool keeps (2 fds
 * each, ktls_sidecar_splice_pipes_idle): what its connections and the pumps in
 * flight hold. The pool grows to the highest number of bodies in flight at once
 * and keeps those pipes, so a raw fd count after a test with more concurrency
 * than the warm-up reads +2 without a leak; a pipe a pump never gave back is
 * not in the pool and still counts. Call it with no traffic in flight.
 */
export async function heldFds(sc: LabSidecar): Promise<number> {
  const idle = await sc.metric('ktls_sidecar_splice_pipes_idle');
  return readdirSync(`/proc/${sc.proc.pid}/fd`).length - 2 * idle;
}

/** Whether heldFds(sc) comes back to `baseline` within `ms`; `detail` for the assertion message. */
export async function fdsBack(sc: LabSidecar, baseline: number, ms = 10_000): Promise<{ ok: boolean; detail: string }> {
  let now = Number.NaN;
  const ok = await until(async () => (now = await heldFds(sc)) <= baseline, ms);
  return { ok, detail: `fds held back to baseline (${now} <= ${baseline}; pooled pipes not counted)` };
}

export async function until(pred: () => boolean | Promise<boolean>, ms = 15_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return pred();
}

/** A TLS 1.3 AES-128-GCM client connection. */
export async function connect(sc: LabSidecar): Promise<Client> {
  return Client.connect(sc.tlsPort, { ...TLS13, ca: readFileSync(labPki().caCert) });
}

/** GET on a new connection, expected byte-exact; the connection is closed after. */
export async function bystander(sc: LabSidecar, n: number): Promise<boolean> {
  const c = await connect(sc);
  c.send('GET', `/bytes/${n}?${GAP}`);
  const got = await c.response();
  c.destroy();
  return got.bytes === n && got.sha === bodyOf(n).sha;
}

/** A response that is cut: how many body bytes came before the end. */
export async function cutResponse(c: Client, onBody?: (n: number) => void): Promise<number> {
  let received = 0;
  await c.response('GET', (n) => {
    received = n;
    onBody?.(n);
  }).then(
    () => Promise.reject(new Error('the response completed')),
    () => undefined,
  );
  return received;
}

/** The fault tests' sidecar: http mode, tx, TLS 1.3 AES-128-GCM, splice from 64 KiB; `more`: other sections. */
export async function startFaultSidecar(t: Test, origin: Origin, ktls: Record<string, unknown> = {}, more: Record<string, unknown> = {}): Promise<LabSidecar> {
  return startLabSidecar(t, {
    ...more,
    mode: 'http',
    upstream: { url: `http://127.0.0.1:${origin.port}` },
    log: { level: 'info', connections: 'all' },
    ktls: { enabled: true, direction: 'tx', ciphers: ['TLS_AES_128_GCM_SHA256'], splice: true, spliceMinBody: 64 * KIB, ...ktls },
  });
}
