// The Duplex every front receives: plaintext in both directions over whatever
// the record layer returned (Node's TLSSocket, or the kTLS / JS record-layer
// stream). It exists for three reasons:
//  - count application bytes ourselves (the raw socket's bytesRead mixes in the
//    handshake ciphertext, and a kTLS socket has no TLS-level counters);
//  - give the fronts the small net.Socket surface node:http / http2 / ws use
//    (setTimeout, setNoDelay, setKeepAlive, destroySoon, addresses) without the
//    fronts ever depending on a TLSSocket;
//  - keep half-close semantics explicit (allowHalfOpen both ways).
import { Duplex } from 'node:stream';
import type { CloseReason } from '../vocabulary.js';
import { relayed } from './external-memory.js';
import type { ConnectionFacts } from './facts.js';

/**
 * Record why a connection is ending, first writer wins. Fronts call it on the
 * Duplex they were given (a no-op on streams that are not PlainConnections).
 */
export function markClose(stream: unknown, reason: CloseReason): void {
  if (stream instanceof PlainConnection && stream.closeReason === undefined) stream.closeReason = reason;
}

interface SocketLike {
  setNoDelay?: (noDelay?: boolean) => unknown;
  setKeepAlive?: (enable?: boolean, initialDelay?: number) => unknown;
}

export class PlainConnection extends Duplex {
  /** Plaintext bytes received from the client. */
  bytesIn = 0;
  /** Plaintext bytes sent to the client. */
  bytesOut = 0;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** Lets code that checks `socket.encrypted` (ws) see the truth. */
  readonly encrypted = true;
  readonly inner: Duplex;
  /** Why the connection ended, when a front or the connection path knows (first writer wins via markClose). */
  closeReason: CloseReason | undefined;
  /** Called per chunk with (received, sent) so byte counters move while a connection lives. */
  onBytes: ((rx: number, tx: number) => void) | undefined;
  /** The idle timeout in force (0: none). */
  private idleMs = 0;
  /** The length the timer was made with (it outlives a disable, see setTimeout). */
  private timerMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(inner: Duplex, facts: Pick<ConnectionFacts, 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort'>) {
    // 64 KiB buffers: fewer backpressure round trips per 16 KiB TLS record.
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.inner = inner;
    this.remoteAddress = facts.remoteAddress;
    this.remotePort = facts.remotePort;
    this.localAddress = facts.localAddress;
    this.localPort = facts.localPort;
    inner.on('data', (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      relayed(chunk.length);
      this.onBytes?.(chunk.length, 0);
      this.touch();
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (err: Error) => this.destroy(err));
    inner.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.bytesOut += chunk.length;
    relayed(chunk.length);
    this.onBytes?.(0, chunk.length);
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
    this.bytesOut += n;
    relayed(n);
    this.onBytes?.(0, n);
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
