// The handshake engine's public contract (see engine.ts for the behaviour).

import type net from 'node:net';
import type { EngineFallbackReason } from '../vocabulary.js';
import type tls from 'node:tls';
import type { CryptoInfo, KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import type { TlsFacts } from './facts.js';

/**
 * What is known when the engine asks `offload()`: after the server's flight,
 * before the client's Finished reaches OpenSSL. Authorization and the peer
 * certificate are not known yet (Node checks them after the Finished).
 */
export interface NegotiatedFacts {
  readonly tlsVersion: TlsVersion;
  /** OpenSSL name, as `tlsSocket.getCipher().name` reports it. */
  readonly cipher: string;
  readonly ianaName: string;
  /** Never null here: offload() is only asked for suites the kernel can hold. */
  readonly kernelCipher: KernelCipher;
  /** Negotiated ALPN protocol, read from the server's flight; null when none. */
  readonly alpn: string | null;
  /** SNI from the ClientHello; null when the client sent none. */
  readonly servername: string | null;
  /** PSK (TLS 1.3) or abbreviated (TLS 1.2) handshake. */
  readonly resumed: boolean;
}

export interface HandshakeCounts {
  /** TLS records given to OpenSSL during the handshake. */
  readonly recordsIn: number;
  /** TLS records OpenSSL wrote during the handshake (forwarded to the client). */
  readonly recordsOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Client bytes read after its Finished (the handoff's `leftover`; 0 for userspace). */
  readonly leftoverBytes: number;
  /** Of `leftoverBytes`: bytes Node had already read into the socket's stream buffer when reading stopped. */
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
   * Called at most once per connection, before the client Finished is fed.
   * true → the keys may go to the kernel; false → they stay in JS. Either
   * way the engine hands off whenever its state is exact (the answer is the
   * hand-off's `offload`): a connection left on the TLSSocket would run over
   * the engine's JS Duplex for its whole life, and Node's TLS over a JS
   * stream can hit an internal assertion that ends the process
   * (nodejs/node#35384). Must be synchronous; a throw counts as false.
   */
  offload(facts: NegotiatedFacts): boolean;
  /**
   * Node's TLS asserted on a write over the engine's Duplex
   * (nodejs/node#35384): the write failed instead (js-stream-guard.ts) and
   * this connection ends with an error. For counting; must not throw.
   */
  jsStreamWriteRefused?(): void;
}

/**
 * Why a connection stayed on Node's TLSSocket over the engine's Duplex
 * (closed set, for logs/metrics): only when no exact hand-off state exists.
 */
/** Why the engine kept the connection on its TLSSocket (proxy/vocabulary.ts). */
export type UserspaceReason = EngineFallbackReason;

export interface UserspaceResult {
  readonly mode: 'userspace';
  /** Node's TLS socket; it owns the connection (closing it closes the raw socket). */
  readonly tlsSocket: tls.TLSSocket;
  readonly facts: HandshakeFacts;
  readonly reason: UserspaceReason;
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
  /** Longest wait for OpenSSL to go quiet after the handshake (tickets, newSession callbacks). Default 2000. */
  readonly quiesceMs?: number;
  /**
   * Session cache store, registered on the server by the engine so hand-offs
   * wait for its callback: Node sends TLS 1.3 tickets only after it. A
   * 'newSession' listener added directly to the server is not waited for
   * (its tickets are dropped at hand-off; state stays correct).
   */
  readonly newSession?: (sessionId: Buffer, sessionData: Buffer, done: () => void) => void;
}
