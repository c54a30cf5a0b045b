// The handshake engine: Node's own TLS (OpenSSL in userspace) performs the
// handshake, then the connection's record layer is handed over — to the
// kernel or to the JS record layer, as offload() answered — with the exact
// per-direction state. docs/design.md "The handshake engine" says why and how.
//
//   raw net.Socket ──► HandshakeConnection ──(one record per turn)──► its Duplex ──► tls.TLSSocket (server)
//                      │ frames records both ways, decrypts them with ◄── its output, forwarded to the
//                      │ the key-log secrets, stops at the client        raw socket unchanged and tracked
//                      │ Finished, stops reading the fd there
//                      └─► after 'secureConnection' + quiet engine: derive CryptoInfo ×2, detach
//
// The tls.Server passed in is dedicated to the engine: it is never listen()ed,
// and the engine owns its 'keylog', 'secureConnection', 'tlsClientError' (and,
// with `newSession`, 'newSession') events. Its options (certs, ciphers,
// ALPN, SNI, requestCert, tickets) are the real ones.
//
// Only a connection without an exact state stays on the TLSSocket over the
// engine's JS Duplex, for its whole life: Node's TLS over a JS stream can hit
// an internal assertion that ends the process (nodejs/node#35384), so the
// caller should count those.
// Every handshake byte runs through a JS Duplex, so connections that can
// never be offloaded must not come here: the caller gives them straight to
// Node's TLSSocket on the raw socket. The engine has no fast path of its own
// on purpose.

import type net from 'node:net';
import type tls from 'node:tls';
import type { CryptoInfo, KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import type { EngineFallbackReason } from '../vocabulary.js';
import { HandshakeConnection } from './connection.js';
import type { TlsFacts } from './facts.js';
import { HandshakeError } from './failure.js';
import { parseKeylogLine } from './keylog.js';

/**
 * What is known when the engine asks `offload()`: after the server's flight,
 * before the client's Finished reaches OpenSSL (ALPN read from that flight,
 * SNI from the ClientHello). Authorization and the peer certificate are not
 * known yet (Node checks them after the Finished).
 */
export interface NegotiatedFacts extends Pick<TlsFacts, 'cipher' | 'alpn' | 'servername' | 'resumed'> {
  readonly tlsVersion: TlsVersion;
  readonly ianaName: string;
  /** Never null here: offload() is only asked for suites the kernel can hold. */
  readonly kernelCipher: KernelCipher;
}

export interface HandshakeCounts {
  /** Of the hand-off's `leftover`: bytes Node had already read into the socket's stream buffer when reading stopped. */
  readonly drainedAtStop: number;
  /** Rejected 0-RTT records skipped by OpenSSL. */
  readonly earlyDataRecordsSkipped: number;
}

/** The engine's result facts: those of any handshake, plus what only the engine sees on the wire. */
export interface HandshakeFacts extends TlsFacts {
  readonly helloRetryRequest: boolean;
  readonly counts: HandshakeCounts;
}

export interface OffloadHooks {
  /**
   * Called at most once per connection, before the client Finished is fed;
   * synchronous, a throw counts as false. Either way the engine hands off
   * whenever its state is exact (see the module comment); the answer rides
   * on it as `offload`.
   */
  offload(facts: NegotiatedFacts): boolean;
  /**
   * Node's TLS asserted on a write over the engine's Duplex
   * (nodejs/node#35384): the write failed instead (js-stream-guard.ts) and
   * this connection ends with an error. For counting; must not throw.
   */
  jsStreamWriteRefused?(): void;
}

export interface UserspaceResult {
  readonly mode: 'userspace';
  /** Node's TLS socket; it owns the connection (closing it closes the raw socket). */
  readonly tlsSocket: tls.TLSSocket;
  readonly facts: HandshakeFacts;
  /** Why it stayed there: only when no exact hand-off state exists. */
  readonly reason: EngineFallbackReason;
}

export interface HandoffResult {
  readonly mode: 'handoff';
  /**
   * The accepted socket, no longer read by Node: libuv reads are stopped, no
   * 'data' listener, paused; every handshake byte OpenSSL wrote has been
   * handed to the kernel (writableLength 0). Call `resumeReading(raw)`
   * (read-control.ts) after attaching a 'data' listener to read again.
   */
  readonly raw: net.Socket;
  readonly facts: HandshakeFacts;
  readonly tx: CryptoInfo;
  readonly rx: CryptoInfo;
  /** TLS 1.3 traffic secrets (for KeyUpdate); undefined for TLS 1.2. The caller wipes them. */
  readonly txSecret?: Buffer;
  readonly rxSecret?: Buffer;
  /**
   * Client ciphertext read after its Finished, starting at a record
   * boundary; may end mid-record. `rx.recSeq` is the sequence number of its
   * first record. Decrypt it (and complete a trailing partial record) before
   * any kernel RX install.
   */
  readonly leftover: Buffer;
  /** The client's FIN was read before the handoff (nothing more will arrive after `leftover`). */
  readonly peerEnded: boolean;
  /**
   * What offload() answered: true → the keys may go to the kernel; false
   * (declined, or the hook threw) → the caller keeps the record layer in JS
   * (proxy/record-layer/install.ts with a userspace decision).
   */
  readonly offload: boolean;
}

export type HandshakeResult = UserspaceResult | HandoffResult;

export interface HandshakeEngineOptions {
  /** From accept() to a result; a slower handshake fails with reason `timeout`. */
  readonly handshakeTimeoutMs: number;
  /**
   * Per-connection buffering budget of the handshake (config
   * `maxHandshakeBufferBytes`). Two bounds follow from it:
   * - client ciphertext read but not yet given to OpenSSL: reaching the
   *   budget pauses reading (TCP pushes back on the client); at the client
   *   Finished reading stops, so `leftover` ≤ maxBufferedBytes + one socket
   *   read (64 KiB) + the socket's readable highWaterMark;
   * - the client's handshake flight itself (everything before its Finished,
   *   incl. rejected 0-RTT): over the budget → rejected, `handshake_buffer_limit`.
   * Minimum 32 KiB (two maximal records).
   */
  readonly maxBufferedBytes: number;
  /**
   * Session cache store, registered on the server by the engine so hand-offs
   * wait for its callback: Node sends TLS 1.3 tickets only after it. A
   * 'newSession' listener added directly to the server is not waited for
   * (its tickets are dropped at hand-off; state stays correct).
   */
  readonly newSession?: (sessionId: Buffer, sessionData: Buffer, done: () => void) => void;
}

/** Smallest accepted maxBufferedBytes: two maximal TLS records. */
export const MIN_BUFFERED_BYTES = 32 * 1024;

export class HandshakeEngine {
  private readonly byClientRandom = new Map<string, HandshakeConnection>();
  private readonly bySocket = new WeakMap<tls.TLSSocket, HandshakeConnection>();
  private readonly live = new Set<HandshakeConnection>();
  private pendingNewSession = 0;
  private droppedAfterHandoff = 0;
  private closed = false;
  private readonly listeners: Array<[string, (...args: unknown[]) => void]> = [];

  constructor(readonly server: tls.Server, readonly opts: HandshakeEngineOptions) {
    if (!(opts.handshakeTimeoutMs > 0)) throw new RangeError('handshakeTimeoutMs must be > 0');
    if (!(opts.maxBufferedBytes >= MIN_BUFFERED_BYTES)) throw new RangeError(`maxBufferedBytes must be >= ${MIN_BUFFERED_BYTES}`);
    this.listen('keylog', (line: Buffer, tlsSocket: tls.TLSSocket) => {
      const entry = parseKeylogLine(line);
      line.fill(0); // the engine owns this server; nobody else needs the line
      if (!entry) return;
      const conn = this.bySocket.get(tlsSocket) ?? this.byClientRandom.get(entry.clientRandom.toString('hex'));
      if (!conn) {
        entry.secret.fill(0);
        return;
      }
      this.bySocket.set(tlsSocket, conn);
      conn.onKeylog(entry, tlsSocket);
    });
    this.listen('secureConnection', (tlsSocket: tls.TLSSocket) => {
      this.bySocket.get(tlsSocket)?.onSecure(tlsSocket);
    });
    this.listen('tlsClientError', (err: Error, tlsSocket: tls.TLSSocket) => {
      this.bySocket.get(tlsSocket)?.onTlsClientError(err, tlsSocket);
    });
    const store = opts.newSession;
    if (store) {
      this.listen('newSession', (id: Buffer, data: Buffer, cb: () => void) => {
        this.pendingNewSession++;
        let called = false;
        const done = (): void => {
          if (called) return;
          called = true;
          this.pendingNewSession--;
          cb();
        };
        try {
          store(id, data, done);
        } catch {
          done();
        }
      });
    }
  }

  private listen<A extends unknown[]>(event: string, fn: (...args: A) => void): void {
    // EventEmitter listeners are untyped; each event's argument types are fixed by Node's tls.Server.
    const listener = fn as unknown as (...args: unknown[]) => void;
    this.server.on(event, listener);
    this.listeners.push([event, listener]);
  }

  /**
   * Run the handshake of one accepted socket. Resolves with a hand-off (the
   * raw socket plus both directions' CryptoInfo) or with a userspace
   * TLSSocket and the reason; rejects with a HandshakeError whose `reason`
   * is a closed label. On rejection the raw socket is already destroyed.
   */
  accept(raw: net.Socket, hooks: OffloadHooks): Promise<HandshakeResult> {
    if (this.closed) {
      raw.destroy();
      return Promise.reject(new HandshakeError('internal_error', 'handshake engine is closed'));
    }
    const conn = new HandshakeConnection(this, raw, hooks);
    this.live.add(conn);
    return conn.run();
  }

  // For its HandshakeConnections: key-log routing, newSession waits, dropped bytes.
  bindClientRandom(hex: string, conn: HandshakeConnection): void {
    this.byClientRandom.set(hex, conn);
  }

  unbind(conn: HandshakeConnection): void {
    this.live.delete(conn);
    if (conn.clientRandomHex && this.byClientRandom.get(conn.clientRandomHex) === conn) this.byClientRandom.delete(conn.clientRandomHex);
  }

  get pendingNewSessions(): number {
    return this.pendingNewSession;
  }

  noteDroppedAfterHandoff(bytes: number): void {
    this.droppedAfterHandoff += bytes;
  }

  /** `bytesDroppedAfterHandoff`: what OpenSSL wrote after a hand-off (dropped; should stay 0). */
  get stats(): { readonly bytesDroppedAfterHandoff: number } {
    return { bytesDroppedAfterHandoff: this.droppedAfterHandoff };
  }

  /** Detach from the server (connections in progress fail with reason `internal_error`). */
  close(): void {
    this.closed = true;
    for (const [event, fn] of this.listeners) this.server.off(event, fn);
    this.listeners.length = 0;
    for (const conn of [...this.live]) conn.fail('internal_error', 'handshake engine closed');
  }
}
