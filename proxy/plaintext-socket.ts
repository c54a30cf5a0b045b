// What every JS plaintext stream a front receives has in common (the kTLS /
// JS record layer itself, proxy/record-layer/stream.ts, and the
// PlainConnection wrapper for other JS streams): the small net.Socket
// surface node:http / http2 / ws use — setTimeout, setNoDelay, setKeepAlive,
// destroySoon, addresses, `encrypted` — its byte counts, and why it closed.
// One class, so the record layer can be the fronts' socket itself: each
// request chunk then crosses one JS stream instead of two.
import { Duplex } from 'node:stream';
import type { DuplexOptions } from 'node:stream';
import type { CloseReason } from './vocabulary.js';

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

/** The TCP options a plaintext stream passes on to the socket under it. */
export interface TcpOptions {
  setNoDelay?: (noDelay?: boolean) => unknown;
  setKeepAlive?: (enable?: boolean, initialDelay?: number) => unknown;
}

/** The connection's addresses (ConnectionFacts has them). */
export interface SocketAddresses {
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

/** 64 KiB buffers: fewer backpressure round trips per 16 KiB TLS record. */
export const PLAINTEXT_BUFFER = 64 * 1024;

// A ByteCounts (proxy/observe/events.ts) by shape: this module imports nothing
// of the areas that use it, so the record layer, the connection path and the
// fronts can all stand on it.
export abstract class PlaintextSocket extends Duplex {
  /** The connection's addresses (the PROXY header's, when one came): set by the connection path. */
  remoteAddress = '';
  remotePort = 0;
  localAddress = '';
  localPort = 0;
  /** Lets code that checks `socket.encrypted` (ws) see the truth. */
  readonly encrypted = true;
  /** The idle timeout in force (0: none). */
  private idleMs = 0;
  /** The length the timer was made with (it outlives a disable, see setTimeout). */
  private timerMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(opts: DuplexOptions) {
    super(opts);
  }

  /** Plaintext bytes received from the client (live, spliced ones included). */
  abstract get bytesIn(): number;
  /** Plaintext bytes sent to the client (live, spliced ones included). */
  abstract get bytesOut(): number;
  /** The socket setNoDelay / setKeepAlive reach, if any. */
  protected abstract tcp(): TcpOptions | null;

  /** Why the connection ended, when a front or the connection path knows (markClose). */
  get closeReason(): CloseReason | undefined {
    return closeReasonOf(this);
  }

  setAddresses(a: SocketAddresses): this {
    this.remoteAddress = a.remoteAddress;
    this.remotePort = a.remotePort;
    this.localAddress = a.localAddress;
    this.localPort = a.localPort;
    return this;
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

  setNoDelay(noDelay = true): this {
    this.tcp()?.setNoDelay?.(noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    this.tcp()?.setKeepAlive?.(enable, initialDelay);
    return this;
  }

  /** net.Socket#destroySoon: finish writing, then close. */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  /** Traffic: push the idle deadline back. refresh() re-arms the same timer object, cheap enough per chunk. */
  protected touch(): void {
    if (this.idleTimer && this.idleMs > 0) this.idleTimer.refresh();
  }

  /** Subclasses call it from _destroy. */
  protected clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private idleExpired(): void {
    if (this.idleMs === 0 || this.destroyed) return;
    markClose(this, 'idle_timeout');
    this.emit('timeout');
  }
}
