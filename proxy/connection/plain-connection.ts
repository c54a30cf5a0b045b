// The plaintext stream every front receives, and its byte counts.
//
// Node's TLSSocket (the userspace record layer) goes to the front as it is:
// node:http and node:http2 then consume its TLSWrap natively, so the request
// path runs no JS stream layer per chunk, and its bytesRead/bytesWritten
// already count plaintext. Every other record layer (kTLS, the JS record
// layer) is a JS Duplex and is wrapped in a PlainConnection, which exists for
// three reasons:
//  - count application bytes ourselves (a kTLS socket has no TLS-level
//    counters, and the raw socket's mix in the handshake ciphertext);
//  - give the fronts the small net.Socket surface node:http / http2 / ws use
//    (setTimeout, setNoDelay, setKeepAlive, destroySoon, addresses) without the
//    fronts ever depending on a TLSSocket;
//  - keep half-close semantics explicit (allowHalfOpen both ways).
// Either way the counts are read, never pushed: observers read them when they
// need them (a scrape, a CPU tick, the close), so no chunk pays for metrics.
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { ByteCounts } from '../observe/events.js';
import { RecordLayerStream } from '../record-layer/stream.js';
import type { CloseReason } from '../vocabulary.js';
import type { ConnectionFacts } from './facts.js';

/**
 * Why a connection is ending, kept on its plaintext stream (first writer
 * wins). A symbol property, not a WeakMap: see proxy/fronts/http.ts.
 */
const kCloseReason = Symbol('ktls-sidecar.closeReason');
type Marked = { [kCloseReason]?: CloseReason };

/** Record why a connection is ending, first writer wins. Fronts call it on the stream they were given. */
export function markClose(stream: unknown, reason: CloseReason): void {
  if (typeof stream === 'object' && stream !== null && (stream as Marked)[kCloseReason] === undefined) {
    (stream as Marked)[kCloseReason] = reason;
  }
}

/** The reason markClose() recorded on `stream`, if any. */
export function closeReasonOf(stream: object): CloseReason | undefined {
  return (stream as Marked)[kCloseReason];
}

/** A front's plaintext stream and the live counts of the application bytes it moved. */
export interface Plaintext {
  readonly stream: Duplex;
  readonly bytes: ByteCounts;
}

/** A TLSSocket's own counters: plaintext, since its handshake (bytesWritten includes what is still queued). */
class TlsSocketBytes implements ByteCounts {
  constructor(private readonly socket: tls.TLSSocket) {}

  get bytesIn(): number {
    return this.socket.bytesRead;
  }

  get bytesOut(): number {
    return this.socket.bytesWritten;
  }
}

/**
 * The plaintext stream a front gets for `stream`, the record layer's (see the
 * top of this file). HTTP/2 keeps the wrapper even over a TLSSocket: its
 * front watches header blocks in the bytes it reads (timeouts.headers, which
 * node:http2 does not enforce), and a natively consumed socket shows it none.
 */
export function plaintextOf(stream: Duplex, facts: Pick<ConnectionFacts, 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort' | 'alpn'>): Plaintext {
  if (stream instanceof tls.TLSSocket && facts.alpn !== 'h2') {
    // node:http and http2 arm the socket's own idle timer; its expiry is the close reason.
    stream.on('timeout', () => markClose(stream, 'idle_timeout'));
    return { stream, bytes: new TlsSocketBytes(stream) };
  }
  const conn = new PlainConnection(stream, facts);
  return { stream: conn, bytes: conn };
}

interface SocketLike {
  setNoDelay?: (noDelay?: boolean) => unknown;
  setKeepAlive?: (enable?: boolean, initialDelay?: number) => unknown;
}

/**
 * The kTLS record layer under a front's plaintext stream, or null: what tcp
 * mode lends directions of to the splice pump (proxy/fronts/tcp-splice.ts).
 */
export function recordLayerOf(conn: Duplex): RecordLayerStream | null {
  return conn instanceof PlainConnection && conn.inner instanceof RecordLayerStream ? conn.inner : null;
}

export class PlainConnection extends Duplex implements ByteCounts {
  /** Plaintext bytes that went through this stream (JS), each way. */
  private jsIn = 0;
  private jsOut = 0;
  /** The record layer, when it can splice: its pumps' bytes never pass through here. */
  private readonly spliced: RecordLayerStream | null;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** Lets code that checks `socket.encrypted` (ws) see the truth. */
  readonly encrypted = true;
  readonly inner: Duplex;
  /** The idle timeout in force (0: none). */
  private idleMs = 0;
  /** The length the timer was made with (it outlives a disable, see setTimeout). */
  private timerMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  /** Why the connection ended, when a front or the connection path knows (markClose). */
  get closeReason(): CloseReason | undefined {
    return closeReasonOf(this);
  }

  constructor(inner: Duplex, facts: Pick<ConnectionFacts, 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort'>) {
    // 64 KiB buffers: fewer backpressure round trips per 16 KiB TLS record.
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.inner = inner;
    this.spliced = inner instanceof RecordLayerStream ? inner : null;
    this.remoteAddress = facts.remoteAddress;
    this.remotePort = facts.remotePort;
    this.localAddress = facts.localAddress;
    this.localPort = facts.localPort;
    inner.on('data', (chunk: Buffer) => {
      this.jsIn += chunk.length;
      this.touch();
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (err: Error) => this.destroy(err));
    inner.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  /** Plaintext bytes received from the client: through this stream, and spliced (live). */
  get bytesIn(): number {
    return this.jsIn + (this.spliced?.splicedIn ?? 0);
  }

  /** Plaintext bytes sent to the client (live). */
  get bytesOut(): number {
    return this.jsOut + (this.spliced?.splicedOut ?? 0);
  }

  get splicedIn(): number {
    return this.spliced?.splicedIn ?? 0;
  }

  get splicedOut(): number {
    return this.spliced?.splicedOut ?? 0;
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.jsOut += chunk.length;
    this.touch();
    if (this.inner.write(chunk)) cb();
    else this.inner.once('drain', () => cb());
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // One cork/uncork so a response head and its body leave in one TLS record batch.
    this.inner.cork();
    let ok = true;
    let n = 0;
    for (const { chunk } of chunks) {
      n += chunk.length;
      ok = this.inner.write(chunk);
    }
    this.inner.uncork();
    this.jsOut += n;
    this.touch();
    if (ok) cb();
    else this.inner.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    // Half-close: our end becomes the inner stream's end (TLS close_notify + FIN).
    this.inner.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.clearIdle();
    this.inner.destroy();
    cb(err);
  }

  /** net.Socket#setTimeout semantics: emit 'timeout' after `ms` without traffic; 0 disables. */
  setTimeout(ms: number, listener?: () => void): this {
    // node:http calls this twice per request (0 while a request runs, the
    // keep-alive timeout after it): one timer per connection, re-armed with
    // refresh() when the length is unchanged, and left to fire unheeded
    // while disabled (ms 0), instead of a new timer each call.
    if (listener) this.once('timeout', listener);
    if (ms > 0 && this.idleTimer && this.timerMs === ms) this.idleTimer.refresh();
    else if (ms > 0) {
      this.clearIdle();
      this.timerMs = ms;
      this.idleTimer = setTimeout(() => this.idleExpired(), ms);
      this.idleTimer.unref();
    }
    this.idleMs = ms;
    return this;
  }

  private idleExpired(): void {
    if (this.idleMs === 0 || this.destroyed) return;
    markClose(this, 'idle_timeout');
    this.emit('timeout');
  }

  setNoDelay(noDelay = true): this {
    (this.inner as SocketLike).setNoDelay?.(noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    (this.inner as SocketLike).setKeepAlive?.(enable, initialDelay);
    return this;
  }

  /** net.Socket#destroySoon: finish writing, then close. */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  private touch(): void {
    // refresh() re-arms the same timer object: cheap enough to do per chunk.
    if (this.idleTimer && this.idleMs > 0) this.idleTimer.refresh();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}
