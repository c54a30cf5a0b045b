// The plaintext stream every front receives, and its byte counts.
//
// Node's TLSSocket (the userspace record layer) goes to the front as it is:
// node:http and node:http2 then consume its TLSWrap natively, so the request
// path runs no JS stream layer per chunk, and its bytesRead/bytesWritten
// already count plaintext. The record layer of a handed-off connection (kTLS,
// or the JS record layer) is a PlaintextSocket itself and goes to the front
// as it is too: it counts application bytes (a kTLS socket has no TLS-level
// counters, and the raw socket's mix in the handshake ciphertext) and has the
// net.Socket surface the fronts use (proxy/plaintext-socket.ts). Any other JS
// Duplex — Node's TLS over the handshake engine's Duplex (engine_fallback) —
// is wrapped in a PlainConnection for the same surface and counts, with
// half-close explicit both ways.
// Either way the counts are read, never pushed: observers read them when they
// need them (a scrape, a CPU tick, the close), so no chunk pays for metrics.
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { ByteCounts } from '../observe/events.js';
import { RecordLayerStream } from '../record-layer/stream.js';
import type { ConnectionFacts } from './facts.js';
import { PLAINTEXT_BUFFER, PlaintextSocket, markClose } from '../plaintext-socket.js';
import type { SocketAddresses, TcpOptions } from '../plaintext-socket.js';

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
 * top of this file). HTTP/2 keeps a JS stream even over a TLSSocket: its
 * front watches header blocks in the bytes it reads (timeouts.headers, which
 * node:http2 does not enforce), and a natively consumed socket shows it none.
 */
export function plaintextOf(stream: Duplex, facts: SocketAddresses & Pick<ConnectionFacts, 'alpn'>): Plaintext {
  if (stream instanceof RecordLayerStream) {
    stream.setAddresses(facts);
    return { stream, bytes: stream };
  }
  if (stream instanceof tls.TLSSocket && facts.alpn !== 'h2') {
    // node:http and http2 arm the socket's own idle timer; its expiry is the close reason.
    stream.on('timeout', () => markClose(stream, 'idle_timeout'));
    return { stream, bytes: new TlsSocketBytes(stream) };
  }
  const conn = new PlainConnection(stream, facts);
  return { stream: conn, bytes: conn };
}

/**
 * The kTLS record layer a front was given as its plaintext stream, or null:
 * what tcp mode and HTTP/1.1 bodies lend directions of to the splice pump
 * (proxy/fronts/tcp-splice.ts, http-splice.ts).
 */
export function recordLayerOf(conn: Duplex): RecordLayerStream | null {
  return conn instanceof RecordLayerStream ? conn : null;
}

/** A JS Duplex that is not a record layer of ours, with the fronts' socket surface and counts. */
export class PlainConnection extends PlaintextSocket {
  /** Plaintext bytes that went through this stream, each way. */
  private jsIn = 0;
  private jsOut = 0;
  readonly inner: Duplex;

  constructor(inner: Duplex, addresses: SocketAddresses) {
    super({ allowHalfOpen: true, readableHighWaterMark: PLAINTEXT_BUFFER, writableHighWaterMark: PLAINTEXT_BUFFER });
    this.inner = inner;
    this.setAddresses(addresses);
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

  get bytesIn(): number {
    return this.jsIn;
  }

  get bytesOut(): number {
    return this.jsOut;
  }

  protected tcp(): TcpOptions {
    return this.inner as TcpOptions;
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
}
