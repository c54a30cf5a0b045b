// A raw-TCP HTTP/1.1 upstream for the adversarial suite. It parses what the
// sidecar forwards with a STRICT framing parser (one Host, at most one
// Content-Length, Transfer-Encoding only `chunked` and never with
// Content-Length, CRLF line ends only, no obs-fold, no NUL), records every
// well-framed request, and counts connections whose bytes did not parse
// (`malformed`): the smuggling cases assert on both. It also plays the
// upstream faults by path:
//   /hang              never answers
//   /reset-mid-body    Content-Length 1 MiB, 64 KiB of it, then a TCP RST
//   /chunk-cut         chunked, one chunk, then FIN without the last chunk
//   /big?n=N           N bytes with a Content-Length, written with backpressure
//   anything else      200 "ok\n", keep-alive
// Idle keep-alive connections are closed after `keepAliveMs` (like any real
// upstream), so the sidecar's pool empties and fd counts settle quickly.
import net from 'node:net';

export interface RecordedRequest {
  method: string;
  target: string;
  /** Header lines in order, names lower-cased. */
  headers: Array<[string, string]>;
  body: Buffer;
  /** Which upstream connection (0-based) carried it. */
  conn: number;
}

export interface RecordingUpstream {
  port: number;
  url: string;
  readonly requests: RecordedRequest[];
  /** Connections whose bytes were not a sequence of well-framed requests. */
  readonly malformed: number;
  /**
   * Upstream connections open now, and the most open at once since
   * `resetPeak()` not counting those already open then (so a case's peak is
   * its own even when an earlier case left connections behind).
   */
  readonly open: number;
  readonly peak: number;
  resetPeak(): void;
  /** Bytes of /big bodies handed to the kernel so far (writes stop while it pushes back). */
  readonly bigSent: number;
  /** Forget the requests and the malformed count (between cases). */
  clear(): void;
  close(): Promise<void>;
}

type Parsed = { kind: 'more' } | { kind: 'bad'; why: string } | { kind: 'ok'; req: Omit<RecordedRequest, 'conn'>; used: number };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const MAX_HEAD = 64 * 1024;

/** Header lines of a head block, or why they are not well-formed. */
function parseHead(head: string): { method: string; target: string; headers: Array<[string, string]> } | string {
  // Split on CRLF only: any CR or LF left inside a line was bare.
  const lines = head.split('\r\n');
  if (lines.some((l) => /[\r\n\0]/.test(l))) return 'bare CR/LF or NUL';
  const m = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(lines[0] ?? '');
  if (!m) return `request line ${JSON.stringify(lines[0])}`;
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    if (/^[ \t]/.test(line)) return 'obs-fold';
    const i = line.indexOf(':');
    const name = line.slice(0, i);
    if (i <= 0 || !TOKEN.test(name)) return `header line ${JSON.stringify(line)}`;
    headers.push([name.toLowerCase(), line.slice(i + 1).trim()]);
  }
  return { method: m[1] ?? '', target: m[2] ?? '', headers };
}

/** Body of a chunked message starting at `at`; null: incomplete so far; a string: why it is malformed. */
function parseChunked(buf: Buffer, at: number): { body: Buffer; end: number } | null | string {
  const parts: Buffer[] = [];
  let off = at;
  for (;;) {
    const eol = buf.indexOf('\r\n', off, 'latin1');
    if (eol < 0) return buf.length - off > 1024 ? 'chunk-size line too long' : null;
    const line = buf.toString('latin1', off, eol);
    const m = /^([0-9a-fA-F]{1,8})(;[!#$%&'*+.^_`|~0-9A-Za-z=";-]*)?$/.exec(line);
    if (!m) return `chunk-size line ${JSON.stringify(line)}`;
    const size = parseInt(m[1] ?? '', 16);
    off = eol + 2;
    if (size === 0) {
      // No trailers from the sidecar: the last chunk is followed by CRLF at once.
      if (buf.length < off + 2) return null;
      if (buf.toString('latin1', off, off + 2) !== '\r\n') return 'trailer after last chunk';
      return { body: Buffer.concat(parts), end: off + 2 };
    }
    if (buf.length < off + size + 2) return null;
    parts.push(buf.subarray(off, off + size));
    if (buf.toString('latin1', off + size, off + size + 2) !== '\r\n') return 'chunk data not followed by CRLF';
    off += size + 2;
  }
}

/** One request at the start of `buf`, strictly framed. */
export function parseRequest(buf: Buffer): Parsed {
  const end = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0) return buf.length > MAX_HEAD ? { kind: 'bad', why: 'head too long' } : { kind: 'more' };
  const head = parseHead(buf.toString('latin1', 0, end));
  if (typeof head === 'string') return { kind: 'bad', why: head };
  const all = (n: string): string[] => head.headers.filter(([k]) => k === n).map(([, v]) => v);
  const [te, cl, host] = [all('transfer-encoding'), all('content-length'), all('host')];
  if (host.length !== 1) return { kind: 'bad', why: `${host.length} Host headers` };
  if (te.length > 0 && cl.length > 0) return { kind: 'bad', why: 'Content-Length with Transfer-Encoding' };
  if (te.length > 1 || (te.length === 1 && te[0]?.toLowerCase() !== 'chunked')) return { kind: 'bad', why: `Transfer-Encoding ${te.join(',')}` };
  if (cl.length > 1 || (cl.length === 1 && !/^\d{1,15}$/.test(cl[0] ?? ''))) return { kind: 'bad', why: `Content-Length ${cl.join(',')}` };
  const start = end + 4;
  const base = { method: head.method, target: head.target, headers: head.headers };
  if (te.length === 1) {
    const c = parseChunked(buf, start);
    if (c === null) return { kind: 'more' };
    if (typeof c === 'string') return { kind: 'bad', why: c };
    return { kind: 'ok', req: { ...base, body: c.body }, used: c.end };
  }
  const n = cl.length === 1 ? Number(cl[0]) : 0;
  if (buf.length < start + n) return { kind: 'more' };
  return { kind: 'ok', req: { ...base, body: buf.subarray(start, start + n) }, used: start + n };
}

const OK = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n';

/** Play the response for `target` on `s`; false when the connection is no longer usable for keep-alive. */
function respond(s: net.Socket, target: string): boolean {
  const u = new URL(target, 'http://upstream');
  switch (u.pathname) {
    case '/hang':
      return false;
    case '/reset-mid-body':
      s.write('HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1048576\r\n\r\n');
      s.write(Buffer.alloc(64 * 1024, 0x61), () => setTimeout(() => s.resetAndDestroy(), 50));
      return false;
    case '/chunk-cut':
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n');
      s.write('10\r\nfirst-chunk-data\r\n', () => setTimeout(() => s.end(), 50));
      return false;
    case '/big':
      writeBig(s, Number(u.searchParams.get('n') ?? '0'));
      return false;
    default:
      s.write(OK);
      return true;
  }
}

/** Body bytes of /big responses written so far (all connections). */
let bigSent = 0;

/** `n` bytes with a Content-Length, 64 KiB at a time, waiting for 'drain'. */
function writeBig(s: net.Socket, n: number): void {
  s.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${n}\r\n\r\n`);
  const block = Buffer.alloc(64 * 1024, 0x62);
  let left = n;
  const pump = (): void => {
    while (left > 0 && !s.destroyed) {
      const part = left >= block.length ? block : block.subarray(0, left);
      left -= part.length;
      bigSent += part.length;
      if (!s.write(part)) {
        s.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

export async function startRecordingUpstream(keepAliveMs = 1000): Promise<RecordingUpstream> {
  const sockets = new Set<net.Socket>();
  let nextConn = 0;
  let peak = 0;
  let openAtReset = 0;
  const state = { requests: [] as RecordedRequest[], malformed: 0 };
  const server = net.createServer((s) => {
    const conn = nextConn++;
    sockets.add(s);
    peak = Math.max(peak, sockets.size);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.setTimeout(keepAliveMs, () => s.destroy());
    let buf = Buffer.alloc(0);
    let busy = false;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // After a fault/long response, the connection only listens (bytes the
      // sidecar should not send would still be caught below as malformed).
      while (buf.length > 0) {
        const p = parseRequest(buf);
        if (p.kind === 'more') return;
        if (p.kind === 'bad') {
          state.malformed++;
          s.destroy();
          return;
        }
        buf = buf.subarray(p.used);
        state.requests.push({ ...p.req, conn });
        if (busy) continue;
        const reusable = respond(s, p.req.target);
        if (!reusable) {
          busy = true;
          s.setTimeout(0);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return state.requests;
    },
    get malformed() {
      return state.malformed;
    },
    get open() {
      return sockets.size;
    },
    get peak() {
      return Math.max(0, peak - openAtReset);
    },
    get bigSent() {
      return bigSent;
    },
    resetPeak: () => {
      peak = openAtReset = sockets.size;
    },
    clear: () => {
      state.requests = [];
      state.malformed = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
