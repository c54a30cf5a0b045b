// Shared fixtures for the handoff-*.test.ts integration tests: a throw-away
// PKI, a server that runs every connection through HandshakeEngine and then
// serves it ONLY through the production record layer with both sides in JS
// (installUserspace → RecordLayerStream, what a `userspace` decision runs,
// built from the handoff's CryptoInfo), and drivers for real, unmodified
// clients (openssl s_client, curl, Node tls/https).

import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import type { HandoffResult, HandshakeEngineOptions, HandshakeFacts, NegotiatedFacts } from '../../proxy/handshake/engine.js';
import type { HandshakeError } from '../../proxy/handshake/failure.js';
import { installUserspace } from '../../proxy/record-layer/install.js';
import type { RecordLayerStats } from '../../proxy/record-layer/paths.js';
import type { RecordLayerStream } from '../../proxy/record-layer/stream.js';

export const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** Deterministic payload: sha256(seed || i) blocks. */
export function gen(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0, o = 0; o < n; i++, o += 32) createHash('sha256').update(seed).update(String(i)).digest().copy(out, o);
  return out;
}

// ------------------------------------------------------------------- PKI

export interface Certs {
  dir: string;
  file(name: string): string;
  ca: Buffer;
  rsaKey: Buffer;
  rsaCert: Buffer;
  ecKey: Buffer;
  ecCert: Buffer;
  clientKey: Buffer;
  clientCert: Buffer;
  cleanup(): void;
}

export function makeCerts(): Certs {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-certs-'));
  const run = (...a: string[]): void => {
    execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    '[srv]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n[cli]\nextendedKeyUsage=clientAuth\n');
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '2', '-subj', '/CN=handoff test CA');
  const leaf = (name: string, keyArgs: string[], subj: string, section: string): void => {
    run('req', '-new', '-newkey', ...keyArgs, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`,
      '-days', '2', '-extfile', 'ext.cnf', '-extensions', section);
  };
  leaf('server-rsa', ['rsa:2048'], '/CN=localhost', 'srv');
  leaf('server-ec', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=localhost', 'srv');
  leaf('client', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=test-client/O=handoff', 'cli');
  const r = (f: string): Buffer => fs.readFileSync(path.join(dir, f));
  return {
    dir,
    file: (f) => path.join(dir, f),
    ca: r('ca.pem'),
    rsaKey: r('server-rsa.key'),
    rsaCert: r('server-rsa.pem'),
    ecKey: r('server-ec.key'),
    ecCert: r('server-ec.pem'),
    clientKey: r('client.key'),
    clientCert: r('client.pem'),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

export function serverTlsOptions(certs: Certs, version: 'TLSv1.2' | 'TLSv1.3', cipher?: string): tls.TlsOptions {
  return {
    key: [certs.rsaKey, certs.ecKey],
    cert: [certs.rsaCert, certs.ecCert],
    minVersion: version,
    maxVersion: version,
    ...(cipher ? (version === 'TLSv1.3' ? { ciphers: cipher } : { ciphers: cipher }) : {}),
  };
}

// ---------------------------------------------------------------- server

export interface ConnRecord {
  mode?: 'handoff' | 'userspace' | 'failed';
  reason?: string;
  failure?: HandshakeError;
  facts?: HandshakeFacts;
  offloadAsked?: NegotiatedFacts;
  txSeq?: bigint;
  rxSeq?: bigint;
  leftoverBytes?: number;
  stats?: RecordLayerStats;
  error?: string;
  /** Server app: per request, sha256 of what the client sent. */
  received: string[];
  done: Promise<ConnRecord>;
}

export interface ServerOptions {
  engine?: Partial<HandshakeEngineOptions>;
  offload?: (facts: NegotiatedFacts) => boolean;
  /** Negative controls: corrupt the handoff before serving it. */
  mutate?: (h: HandoffResult) => void;
  onTlsServer?: (s: tls.Server) => void;
}

export interface TestServer {
  port: number;
  engine: HandshakeEngine;
  conn(i: number, timeoutMs?: number): Promise<ConnRecord>;
  close(): void;
}

/**
 * App on the plaintext stream, protocol sniffed:
 *   "GET "/"POST " → HTTP/1.1, one request: body sha256 in X-Req-Sha256, ?size=N response bytes, then close.
 *   "REQ a b\n" + a bytes → "RES <sha256> b\n" + b bytes (repeatable).
 *   else line echo "ECHO:<line>\n"; the line "SRVKU" makes the server send KeyUpdate(update_requested) first.
 */
function serveApp(s: Duplex, rec: ConnRecord, u: RecordLayerStream | null): void {
  let buf = Buffer.alloc(0);
  let mode: 'http' | 'req' | 'echo' | 'done' | null = null;
  let http: { url: string; len: number } | null = null;
  const onData = (): void => {
    if (!mode && buf.length >= 4) {
      const head = buf.toString('latin1', 0, 5);
      mode = /^(GET|POST|PUT) /.test(head) ? 'http' : head.startsWith('REQ ') ? 'req' : 'echo';
    }
    if (mode === 'echo') {
      for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10)) {
        const line = buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
        buf = buf.subarray(i + 1);
        if (line === 'SRVKU') u?.keyUpdate(true);
        s.write(`ECHO:${line}\n`);
      }
    } else if (mode === 'req') {
      for (;;) {
        const i = buf.indexOf(10);
        if (i < 0) return;
        const [, a, b] = buf.subarray(0, i).toString('latin1').split(' ');
        const need = Number(a);
        if (buf.length < i + 1 + need) return;
        const h = sha256(buf.subarray(i + 1, i + 1 + need));
        buf = buf.subarray(i + 1 + need);
        rec.received.push(h);
        s.write(Buffer.concat([Buffer.from(`RES ${h} ${b}\n`), gen(Number(b), h)]));
      }
    } else if (mode === 'http') {
      if (!http) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const lines = buf.subarray(0, i).toString('latin1').split('\r\n');
        const len = Number(/^content-length:\s*(\d+)/im.exec(lines.join('\n'))?.[1] ?? 0);
        http = { url: lines[0]?.split(' ')[1] ?? '/', len };
        buf = buf.subarray(i + 4);
      }
      if (buf.length < http.len) return;
      const h = sha256(buf.subarray(0, http.len));
      rec.received.push(h);
      const size = Number(new URL(http.url, 'http://x').searchParams.get('size') ?? 1000);
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\nX-Req-Sha256: ${h}\r\nConnection: close\r\n\r\n`);
      s.write(gen(size, h));
      mode = 'done';
      s.end();
    }
  };
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    onData();
  });
  s.on('end', () => {
    if (!s.writableEnded) s.end();
  });
}

export async function startServer(tlsOptions: tls.TlsOptions, opts: ServerOptions = {}): Promise<TestServer> {
  const tlsServer = tls.createServer(tlsOptions);
  opts.onTlsServer?.(tlsServer);
  const engine = new HandshakeEngine(tlsServer, {
    handshakeTimeoutMs: 10_000,
    maxBufferedBytes: 256 * 1024,
    ...opts.engine,
  });
  const conns: ConnRecord[] = [];
  const arrived: Array<() => void> = [];
  const live = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    live.add(raw);
    raw.on('close', () => live.delete(raw));
    let finish: (r: ConnRecord) => void = () => {};
    const rec: ConnRecord = { received: [], done: new Promise((r) => { finish = r; }) };
    conns.push(rec);
    for (const w of arrived.splice(0)) w();
    raw.on('error', (e) => { rec.error ??= `raw: ${e.message}`; });
    engine.accept(raw, {
      offload: (facts) => {
        rec.offloadAsked = facts;
        return opts.offload ? opts.offload(facts) : true;
      },
    }).then((h) => {
      rec.facts = h.facts;
      if (h.mode === 'userspace') {
        rec.mode = 'userspace';
        rec.reason = h.reason;
        serveApp(h.tlsSocket, rec, null);
        h.tlsSocket.on('error', (e: Error) => { rec.error ??= e.message; });
        h.tlsSocket.on('close', () => finish(rec));
        return;
      }
      rec.mode = 'handoff';
      opts.mutate?.(h);
      rec.txSeq = h.tx.recSeq;
      rec.rxSeq = h.rx.recSeq;
      rec.leftoverBytes = h.leftover.length;
      let u: RecordLayerStream;
      try {
        // As production: the config's default KeyUpdate rate limit, the fronts' half-close semantics.
        u = installUserspace({ handoff: h, keyUpdateRateLimit: 10, allowHalfOpen: true });
      } catch (e) {
        rec.error ??= (e as Error).message;
        finish(rec);
        return;
      }
      serveApp(u, rec, u);
      u.on('error', (e) => { rec.error ??= e.message; });
      u.on('close', () => {
        rec.stats = u.stats();
        finish(rec);
      });
    }, (err: HandshakeError) => {
      rec.mode = 'failed';
      rec.failure = err;
      finish(rec);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    engine,
    async conn(i, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (!conns[i]) {
        if (Date.now() > deadline) throw new Error(`server saw no connection #${i}`);
        await new Promise<void>((r) => { arrived.push(r); setTimeout(r, 100); });
      }
      const c = conns[i];
      if (!c) throw new Error('unreachable');
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([c.done, new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error(`server connection #${i} did not finish`)), Math.max(1, deadline - Date.now()));
        })]);
      } finally {
        clearTimeout(timer);
      }
    },
    close() {
      server.close();
      for (const s of live) s.destroy();
    },
  };
}

// --------------------------------------------------------------- clients

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`${what} timed out`)), ms); })])
    .finally(() => clearTimeout(timer));
}

export type SClientStep = { send: string } | { cmd: 'K' | 'k' };

export interface SClientResult {
  exit: number | null;
  stderr: string;
  /** Lines of stderr that look like errors. */
  problems: string[];
  keyUpdates: number;
}

/** openssl s_client driven through stdin; each `send` waits for its echo, each K/k for s_client's KEYUPDATE note. */
export async function sClient(port: number, certs: Certs, o: { version: 'TLSv1.2' | 'TLSv1.3'; cipher?: string; args?: string[]; steps: SClientStep[]; timeoutMs?: number }): Promise<SClientResult> {
  const a = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', certs.file('ca.pem'),
    '-verify_return_error', '-quiet', '-no_ign_eof'];
  if (o.version === 'TLSv1.3') a.push('-tls1_3', ...(o.cipher ? ['-ciphersuites', o.cipher] : []));
  else a.push('-tls1_2', ...(o.cipher ? ['-cipher', o.cipher] : []));
  a.push(...(o.args ?? []));
  const p = spawn('openssl', a, { stdio: ['pipe', 'pipe', 'pipe'] });
  const timeoutMs = o.timeoutMs ?? 15_000;
  let out = '';
  let err = '';
  let wake: () => void = () => {};
  p.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); wake(); });
  p.stderr.on('data', (d: Buffer) => { err += d.toString('latin1'); wake(); });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => { exitCode = code; wake(); r(code); }));
  const until = async (pred: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (exitCode !== undefined) throw new Error(`s_client exited (${exitCode}) waiting for ${what}: ${err.trim().slice(-300)}`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}: ${err.trim().slice(-300)}`);
      await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
    }
  };
  try {
    let ku = 0;
    for (const st of o.steps) {
      if ('cmd' in st) {
        p.stdin.write(`${st.cmd}\n`);
        ku++;
        await until(() => (err.match(/KEYUPDATE/g) ?? []).length >= ku, `KEYUPDATE #${ku}`);
      } else {
        p.stdin.write(`${st.send}\n`);
        await until(() => out.includes(`ECHO:${st.send}\n`), `echo of ${st.send.slice(0, 20)}`);
      }
    }
    p.stdin.end(); // → close_notify
    const exit = await withTimeout(exited, timeoutMs, 's_client exit');
    const problems = err.split('\n').filter((l) => /error|alert|unexpected eof|bad record|decrypt/i.test(l));
    return { exit, stderr: err, problems, keyUpdates: (err.match(/KEYUPDATE/g) ?? []).length };
  } catch (e) {
    p.kill();
    throw e;
  }
}

/** A transport that sends the client's bytes in tiny TCP writes. */
function dripSocket(port: number, n: number): Duplex {
  const raw = net.connect(port, '127.0.0.1');
  raw.setNoDelay(true);
  const d = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      let o = 0;
      const step = (): void => {
        if (o >= chunk.length) return cb();
        raw.write(chunk.subarray(o, o + n));
        o += n;
        setTimeout(step, 1);
      };
      step();
    },
    final(cb) { raw.end(); cb(); },
    destroy(e, cb) { raw.destroy(); cb(e); },
  });
  raw.on('data', (x: Buffer) => d.push(x));
  raw.on('end', () => d.push(null));
  raw.on('error', (e) => d.destroy(e));
  return d;
}

export interface NodeTlsResult {
  ok: boolean;
  error?: string;
  protocol?: string | null;
  cipher?: string;
  resumed?: boolean;
  session?: Buffer;
  responses: number;
}

/**
 * Node tls.connect speaking the REQ protocol: each [up, down] sends `up`
 * bytes and checks the `down` bytes back (sha256 both ways). The first
 * request is written in 'secureConnect', right behind the client Finished.
 */
export function nodeTls(port: number, certs: Certs, o: { tlsOpts?: tls.ConnectionOptions; reqs?: Array<[number, number]>; drip?: number; timeoutMs?: number } = {}): Promise<NodeTlsResult> {
  const reqs = o.reqs ?? [[20_000, 70_000], [100_000, 300_000]];
  return withTimeout(new Promise<NodeTlsResult>((resolve) => {
    const res: NodeTlsResult = { ok: false, responses: 0 };
    const s = tls.connect({
      host: '127.0.0.1', port, servername: 'localhost', ca: certs.ca,
      ...(o.drip ? { socket: dripSocket(port, o.drip) } : {}), ...o.tlsOpts,
    });
    let buf = Buffer.alloc(0);
    let expected = { hash: '', len: 0 };
    let allOk = false;
    let gotEnd = false;
    const send = (i: number): void => {
      const [up, down] = reqs[i] as [number, number];
      const body = gen(up, `req${i}-${Math.random()}`);
      expected = { hash: sha256(body), len: down };
      s.write(Buffer.concat([Buffer.from(`REQ ${up} ${down}\n`), body]));
    };
    s.on('session', (sess: Buffer) => { res.session = sess; });
    s.on('secureConnect', () => {
      res.protocol = s.getProtocol();
      res.cipher = s.getCipher().name;
      res.resumed = s.isSessionReused();
      send(0);
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const j = buf.indexOf(10);
      if (j < 0) return;
      const [tag, h, n] = buf.subarray(0, j).toString('latin1').split(' ');
      if (buf.length < j + 1 + Number(n)) return;
      const body = buf.subarray(j + 1, j + 1 + Number(n));
      buf = buf.subarray(j + 1 + Number(n));
      if (tag !== 'RES' || h !== expected.hash || !body.equals(gen(expected.len, h))) {
        res.error = `bad response ${res.responses}`;
        s.destroy();
        return;
      }
      res.responses++;
      if (res.responses < reqs.length) send(res.responses);
      else { allOk = true; s.end(); }
    });
    s.on('end', () => { gotEnd = true; });
    s.on('error', (e: Error) => { res.error ??= e.message; });
    s.on('close', () => {
      res.ok = allOk && gotEnd && !res.error;
      setImmediate(() => resolve(res)); // a late 'session' (TLS 1.3 tickets) gets its turn
    });
  }), o.timeoutMs ?? 15_000, 'node tls client');
}

export interface HttpResult {
  ok: boolean;
  status?: number;
  error?: string;
  detail?: string;
}

/** Node https POST: body sha256 must come back in X-Req-Sha256 and the response body must match. */
export function nodeHttps(port: number, certs: Certs, o: { tlsOpts?: https.RequestOptions; bodyLen?: number; size?: number } = {}): Promise<HttpResult> {
  const bodyLen = o.bodyLen ?? 30_000;
  const size = o.size ?? 200_000;
  return withTimeout(new Promise<HttpResult>((resolve) => {
    const body = gen(bodyLen, `https-${Math.random()}`);
    const req = https.request({
      host: '127.0.0.1', port, servername: 'localhost', ca: certs.ca, agent: false, method: 'POST',
      path: `/x?size=${size}`, headers: { 'content-length': bodyLen }, ...o.tlsOpts,
    }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (d: Buffer) => chunks.push(d));
      r.on('end', () => {
        const h = sha256(body);
        const ok = r.statusCode === 200 && r.headers['x-req-sha256'] === h && Buffer.concat(chunks).equals(gen(size, h));
        resolve({ ok, status: r.statusCode ?? 0, ...(ok ? {} : { detail: 'body mismatch' }) });
      });
      r.on('error', (e) => resolve({ ok: false, error: e.message }));
    });
    req.on('error', (e) => resolve({ ok: false, error: e.message }));
    req.end(body);
  }), 15_000, 'node https client');
}

/** curl POST; exit 0, no error lines, body checked both ways. */
export function curl(port: number, certs: Certs, o: { version: 'TLSv1.2' | 'TLSv1.3'; cipher?: string; bodyLen?: number; size?: number }): Promise<HttpResult & { stderr: string }> {
  const bodyLen = o.bodyLen ?? 30_000;
  const size = o.size ?? 200_000;
  return withTimeout(new Promise((resolve) => {
    const dir = fs.mkdtempSync(path.join(certs.dir, 'curl-'));
    const body = gen(bodyLen, `curl-${Math.random()}`);
    fs.writeFileSync(path.join(dir, 'body'), body);
    const a = ['-sS', '-v', '--fail', '--cacert', certs.file('ca.pem'), '--resolve', `localhost:${port}:127.0.0.1`,
      `https://localhost:${port}/x?size=${size}`, '--data-binary', `@${path.join(dir, 'body')}`,
      '-H', 'Content-Type: application/octet-stream', '-o', path.join(dir, 'out'), '-D', path.join(dir, 'hdr')];
    if (o.version === 'TLSv1.3') a.push('--tlsv1.3', '--tls-max', '1.3', ...(o.cipher ? ['--tls13-ciphers', o.cipher] : []));
    else a.push('--tlsv1.2', '--tls-max', '1.2', ...(o.cipher ? ['--ciphers', o.cipher] : []));
    const p = spawn('curl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d.toString('latin1'); });
    p.on('exit', (code) => {
      let ok: boolean;
      try {
        const h = sha256(body);
        ok = fs.readFileSync(path.join(dir, 'hdr'), 'latin1').toLowerCase().includes(`x-req-sha256: ${h}`) &&
          fs.readFileSync(path.join(dir, 'out')).equals(gen(size, h));
      } catch {
        ok = false;
      }
      const bad = err.split('\n').filter((l) => /curl: \(|error|unexpected eof/i.test(l) && !/^\* ALPN/.test(l));
      resolve({ ok: code === 0 && ok && bad.length === 0, status: code ?? -1, stderr: err, ...(bad.length ? { detail: bad.join('; ') } : {}) });
    });
  }), 15_000, 'curl');
}

export const KU_STEPS: SClientStep[] = [
  { send: 'hello-1' }, { cmd: 'K' }, { send: 'hello-2 after client KeyUpdate(update_requested)' },
  { cmd: 'k' }, { send: 'hello-3 after client KeyUpdate(update_not_requested)' },
  { send: 'SRVKU' }, { send: 'hello-4 after server KeyUpdate(update_requested)' },
  { send: `hello-5 ${'x'.repeat(12_000)}` },
];
export const PLAIN_STEPS: SClientStep[] = [{ send: 'hello-1' }, { send: `hello-2 ${'y'.repeat(12_000)}` }];
