// HTTP/1.1 response bodies through the splice pump: once node:http has sent
// the response head (and the body bytes JS had already read), the rest of a
// Content-Length body moves from the upstream socket into the client's kTLS
// TX in the kernel (a TX lend for exactly that many bytes,
// proxy/record-layer/splice.ts), never through JS; then the response ends
// with no more bytes from JS and both sockets go on: the upstream back to the
// pool, the client to its next keep-alive request.
//
// Which responses (bodySpliceWanted, clientCanLend): the client connection is
// HTTP/1.1 on kTLS with TX in the kernel and `ktls.splice` on; the response
// has a body framed by Content-Length of at least `ktls.spliceMinBody`
// (never HEAD, 1xx, 204, 304, chunked or close-delimited); the upstream is a
// plain TCP socket of our pool (a TLS upstream's fd carries ciphertext).
// Everything else keeps the JS path.
//
// Order: the lend starts in the write callback of the response's JS bytes,
// i.e. once node:http handed them to the connection (a pipelined response
// waits there for the ones before it), and the record layer queues the lend
// behind every write it accepted. Ends: all bytes out ends the response; the
// upstream failing (a reset, a FIN before the length) is the exchange's
// failure (counted, the client's connection cut: the head is out); the
// client or the pump failing closes both sides; a lend stopped early hands
// the rest back to JS. The socket idle timeout sees no spliced byte: while
// the pump moves bytes, the connection's timer is re-armed.
import type http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { recordLayerOf } from '../connection/plain-connection.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { closeBeforeSocket } from '../record-layer/splice.js';
import type { SpliceOutcome } from '../record-layer/splice.js';
import type { RecordLayerStream } from '../record-layer/stream.js';
import type { ResponseHead } from '../upstream/response-head.js';
import { socketFd } from '../../native/index.js';

/** The facts the body decision reads. */
export interface BodySpliceFacts {
  /** `ktls.spliceMinBody` (a positive size; 0 here, as a front built without it, never splices). */
  readonly minBody: number;
  /** The client side speaks HTTP/2 (node:http2 frames the body: never spliced). */
  readonly h2: boolean;
  readonly method: string;
  readonly head: Pick<ResponseHead, 'status' | 'framing' | 'contentLength'>;
}

/** Whether this response's body may leave JS, by the response alone (the sockets are asked separately). */
export function bodySpliceWanted(f: BodySpliceFacts): boolean {
  const { status, framing, contentLength } = f.head;
  if (f.minBody <= 0 || f.h2 || f.method === 'HEAD') return false;
  if (status < 200 || status === 204 || status === 304) return false;
  return framing === 'length' && contentLength >= f.minBody;
}

/** The client connection's record layer, when it can lend TX now (kTLS TX, `ktls.splice`, a pump). */
export function clientCanLend(conn: Duplex): RecordLayerStream | null {
  const stream = recordLayerOf(conn);
  return stream?.canSplice('tx') ? stream : null;
}

/** What a body splice tells its relay. */
export interface BodySpliceHost {
  /** Exactly the body's length went out (`left` 0), or a lend stopped early: `left` bytes are JS's to relay. */
  returned(left: number): void;
  /** The upstream failed mid-body (reset, FIN before the length). */
  upstreamFailed(err: NodeJS.ErrnoException): void;
  /** The client's socket or the pump failed: both sides close (`err` undefined for a client that left). */
  clientFailed(err: Error | undefined): void;
}

/**
 * One pump closer per upstream socket, hooked once for its life (a pooled
 * socket serves many responses; closeBeforeSocket hooks cannot be removed).
 */
const kCloser = Symbol('ktls-sidecar.bodySpliceCloser');
type Guarded = net.Socket & { [kCloser]?: (() => void) | null };

function guard(socket: net.Socket, closer: (() => void) | null): void {
  const g = socket as Guarded;
  if (g[kCloser] === undefined) {
    closeBeforeSocket(socket, () => {
      const c = g[kCloser];
      g[kCloser] = null;
      c?.();
    });
  }
  g[kCloser] = closer;
}

export class BodySplice {
  private over = false;
  private watch: NodeJS.Timeout | undefined;
  private readonly onConnClose = (): void => this.release();
  /** The stream's spliced byte count when the lend began (a lend stopped early tells no count). */
  private startOut = 0;

  constructor(
    private readonly conn: Duplex,
    private readonly stream: RecordLayerStream,
    private readonly upstream: net.Socket,
    private readonly left: number,
    /** `timeouts.idle` (0: none): the connection's timer is re-armed while the pump moves bytes. */
    private readonly idleMs: number,
    private readonly host: BodySpliceHost,
  ) {}

  /**
   * Send the head and `rest` through node:http, then lend TX for the rest of
   * the body. The head must carry the upstream's Content-Length and no
   * Transfer-Encoding (writeHead done by the relay).
   */
  start(res: http.ServerResponse, rest: Buffer): void {
    guard(this.upstream, () => {
      // The upstream socket is going (its fd with it): the pump first.
      this.release();
      this.stream.closeSplices();
    });
    this.conn.once('close', this.onConnClose);
    // An empty `rest` still sends the head: node:http corks it with the chunk.
    res.write(rest, (err) => {
      if (!err) this.lend();
    });
  }

  private lend(): void {
    if (this.over) return;
    // Either socket gone: its close ends the exchange (res 'close', the pool's onClose).
    if (this.conn.destroyed || this.upstream.destroyed) return this.end();
    const fd = socketFd(this.upstream);
    if (fd === null || !this.stream.canSplice('tx')) {
      // TX went meanwhile (closed, or lent elsewhere): JS relays the body, or fails writing it.
      this.end();
      this.host.returned(this.left);
      return;
    }
    this.startOut = this.stream.splicedOut;
    this.stream.spliceTx(fd, (o) => this.ended(o), this.left);
    if (this.idleMs > 0) this.watchProgress(this.idleMs);
  }

  private ended(o: SpliceOutcome): void {
    if (this.over) return;
    this.end();
    switch (o.end) {
      case 'done':
        return this.host.returned(0);
      case 'eof':
      case 'stopped': {
        const left = this.left - (this.stream.splicedOut - this.startOut);
        if (left > 0 && this.conn.writable && !this.conn.destroyed) return this.host.returned(left);
        if (left <= 0) return this.host.returned(0);
        return this.host.clientFailed(undefined);
      }
      case 'failed':
        if (o.side === 'other') {
          const code = o.error.errno === 'UNKNOWN' ? 'ECONNRESET' : o.error.errno;
          return this.host.upstreamFailed(Object.assign(new Error(`upstream failed mid-body: ${String(o.cause)}`), { code }));
        }
        // A client that left (reset, broken pipe) is no error of ours; the record layer counted the syscall.
        return this.host.clientFailed(o.error.kind === 'closed' ? undefined : new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS splice failed: ${o.error.errno} (${o.error.stage})`, { cause: o.cause }));
    }
  }

  /** The lend is over (or its pump closed): no more hooks. */
  private end(): void {
    this.over = true;
    this.release();
    guard(this.upstream, null);
  }

  private release(): void {
    clearTimeout(this.watch);
    this.watch = undefined;
    this.conn.off('close', this.onConnClose);
  }

  /**
   * node:http's socket timer sees no spliced byte: while the pump moves
   * bytes, re-arm it (PlainConnection.setTimeout with the same length
   * refreshes it); a stalled client lets it fire as for any response.
   */
  private watchProgress(idleMs: number): void {
    let last = this.stream.splicedOut;
    const conn = this.conn as Duplex & { setTimeout?: (ms: number) => unknown };
    this.watch = setTimeout(() => {
      const now = this.stream.splicedOut;
      if (now !== last) conn.setTimeout?.(idleMs);
      last = now;
      this.watch?.refresh();
    }, Math.max(10, Math.ceil(idleMs / 4)));
    this.watch.unref();
  }
}
