// Clients that send exactly the bytes an attacker would: raw HTTP/1.1 over
// TLS, a raw HTTP/2 frame writer/reader over TLS (the frames node:http2 never
// sends: HEADERS without END_HEADERS, CONTINUATION floods, HEADERS +
// RST_STREAM loops, streams past the peer's limit), and the first bytes of a
// real ClientHello for half-open handshakes.
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

export interface Exchange {
  /** Everything received, latin1. */
  data: string;
  /** The server closed the connection (before we gave up waiting). */
  closed: boolean;
}

/**
 * TLS (ALPN http/1.1) to the sidecar, write `chunks` (a number = a pause in
 * ms), then collect until the server closes, `maxMs` pass, or `quietMs` pass
 * without a byte after something arrived.
 */
export function tlsExchange(port: number, ca: string, chunks: Array<string | Buffer | number>, o: { maxMs?: number; quietMs?: number } = {}): Promise<Exchange> {
  const maxMs = o.maxMs ?? 4000;
  const quietMs = o.quietMs ?? 400;
  return new Promise((resolve) => {
    let data = '';
    let quiet: NodeJS.Timeout | undefined;
    const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(ca), servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      void writeAll(s, chunks);
    });
    const finish = (closed: boolean): void => {
      clearTimeout(max);
      clearTimeout(quiet);
      s.destroy();
      resolve({ data, closed });
    };
    const max = setTimeout(() => finish(false), maxMs);
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      clearTimeout(quiet);
      quiet = setTimeout(() => finish(false), quietMs);
    });
    s.on('error', () => undefined);
    s.on('close', () => finish(true));
  });
}

async function writeAll(s: tls.TLSSocket, chunks: Array<string | Buffer | number>): Promise<void> {
  for (const c of chunks) {
    if (s.destroyed) return;
    if (typeof c === 'number') await new Promise((r) => setTimeout(r, c));
    else s.write(c);
  }
}

/** Status code of the first response in `data`, or 0 if there is none. */
export function firstStatus(data: string): number {
  const m = /^HTTP\/1\.[01] (\d{3}) /.exec(data);
  return m ? Number(m[1]) : 0;
}

/** The first `n` bytes of a real ClientHello (node's TLS client against a byte sink). */
export function clientHelloPrefix(n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = net.createServer((c) => {
      c.once('data', (d: Buffer) => {
        resolve(d.subarray(0, Math.min(n, d.length - 1)));
        c.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const s = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      s.on('error', () => undefined);
    });
  });
}

// ---------------------------------------------------------------- HTTP/2

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const H2_REFUSED_STREAM = 7;
export const H2_CANCEL = 8;
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK integer with an N-bit prefix (RFC 7541 5.1). */
function hpackInt(value: number, bits: number, first: number): Buffer {
  const max = (1 << bits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

/** A header block: every field a literal without indexing, new name (no dynamic table state to track). */
export function hpack(fields: Array<[string, string]>): Buffer {
  return Buffer.concat(fields.flatMap(([k, v]) => [Buffer.from([0]), hpackString(k), hpackString(v)]));
}

/** The request pseudo-headers of a GET (or `method`) to `path`. */
export function requestBlock(path: string, method = 'GET', extra: Array<[string, string]> = []): Buffer {
  return hpack([[':method', method], [':scheme', 'https'], [':authority', 'localhost'], [':path', path], ...extra]);
}

export interface RawH2 {
  socket: tls.TLSSocket;
  write(b: Buffer): boolean;
  /** Write and wait for the socket to drain (or close: a server that hung up never drains). */
  send(b: Buffer): Promise<void>;
  /** RST_STREAM codes received, by stream id. */
  resets: Map<number, number>;
  /** Streams that got a HEADERS frame (a response) from the server. */
  answered: Set<number>;
  /** The GOAWAY error code, once one arrived. */
  goaway: number | undefined;
  /** Resolves when the connection is closed (by either side). */
  closed: Promise<void>;
  isClosed(): boolean;
}

/** Parse whole frames out of `buf`, hand each to `on`; returns the rest. */
function readFrames(buf: Buffer, on: (type: number, flags: number, stream: number, payload: Buffer) => void): Buffer {
  while (buf.length >= 9) {
    const len = buf.readUIntBE(0, 3);
    if (buf.length < 9 + len) break;
    on(buf[3] ?? 0, buf[4] ?? 0, buf.readUInt32BE(5) & 0x7fffffff, buf.subarray(9, 9 + len));
    buf = buf.subarray(9 + len);
  }
  return buf;
}

/**
 * A raw HTTP/2 connection over TLS: preface + empty SETTINGS sent, followed
 * at once by `firstFlight` if given (frames a fast client sends before it has
 * seen the server's SETTINGS); the server's SETTINGS are ACKed (so its limits
 * are in force), its PINGs are not answered. Resolves once the server's first
 * SETTINGS frame arrived.
 */
export function rawH2(port: number, ca: string, firstFlight?: Buffer): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(ca), servername: 'localhost', ALPNProtocols: ['h2'] });
    let closedFlag = false;
    const closed = new Promise<void>((r) => socket.once('close', () => ((closedFlag = true), r())));
    const conn: RawH2 = {
      socket,
      write: (b) => !socket.destroyed && socket.write(b),
      send: (b) =>
        new Promise<void>((done) => {
          if (socket.destroyed || socket.write(b)) return done();
          const both = (): void => {
            socket.off('drain', both);
            socket.off('close', both);
            done();
          };
          socket.on('drain', both);
          socket.on('close', both);
        }),
      resets: new Map(),
      answered: new Set(),
      goaway: undefined,
      closed,
      isClosed: () => closedFlag,
    };
    let buf: Buffer = Buffer.alloc(0);
    let ready = false;
    socket.on('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') reject(new Error(`ALPN ${String(socket.alpnProtocol)}`));
      socket.write(Buffer.concat([Buffer.from(PREFACE), frame(FRAME.SETTINGS, 0, 0), firstFlight ?? Buffer.alloc(0)]));
    });
    socket.on('data', (d: Buffer) => {
      buf = readFrames(Buffer.concat([buf, d]), (type, flags, stream, payload) => {
        if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) {
          conn.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
          if (!ready) {
            ready = true;
            resolve(conn);
          }
        } else if (type === FRAME.RST_STREAM) conn.resets.set(stream, payload.readUInt32BE(0));
        else if (type === FRAME.HEADERS) conn.answered.add(stream);
        else if (type === FRAME.GOAWAY) conn.goaway = payload.readUInt32BE(4);
      });
    });
    socket.on('error', () => undefined);
    void closed.then(() => {
      if (!ready) reject(new Error('closed before SETTINGS'));
    });
  });
}

/** One HTTP/2 request with node:http2; resolves with the status and body (or rejects on a stream error). */
export async function h2Get(port: number, ca: string, path: string, o: { method?: string; body?: Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Buffer }> {
  const client = http2.connect(`https://localhost:${port}`, { ca: fs.readFileSync(ca) });
  client.on('error', () => undefined);
  try {
    return await new Promise((resolve, reject) => {
      const req = client.request({ ':method': o.method ?? 'GET', ':path': path, ...o.headers }, { endStream: o.body === undefined });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      req.on('error', reject);
      if (o.body !== undefined) req.end(o.body);
    });
  } finally {
    client.close();
  }
}
