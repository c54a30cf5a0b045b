// The handshake engine: Node's own TLS (OpenSSL in userspace) performs the
// handshake, then the connection's record layer is handed over — to the
// kernel or to the JS record layer, as offload() answered — with the exact
// per-direction state. docs/design.md "The handshake engine" says why and how.
//
//   raw net.Socket ──► HandshakeConnection ──(one record per turn)──► EngineDuplex ──► tls.TLSSocket (server)
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
// engine's JS Duplex (nodejs/node#35384): the caller should count those.
// Every handshake byte runs through a JS Duplex, so connections that can
// never be offloaded must not come here: the caller gives them straight to
// Node's TLSSocket on the raw socket. The engine has no fast path of its own
// on purpose.

import type net from 'node:net';
import type tls from 'node:tls';
import { HandshakeConnection } from './connection.js';
import { parseKeylogLine } from './keylog.js';
import type { HandshakeEngineOptions, HandshakeResult, OffloadHooks } from './types.js';

import { HandshakeError } from './errors.js';

// The engine's public names, for its callers.
export type { HandshakeEngineOptions, HandshakeFacts, HandshakeResult, HandoffResult, NegotiatedFacts } from './types.js';
export { HandshakeError } from './errors.js';

/** What a HandshakeConnection needs from its engine. */
export interface EngineContext {
  readonly server: tls.Server;
  readonly handshakeTimeoutMs: number;
  readonly maxBufferedBytes: number;
  readonly quiesceMs: number;
  bindClientRandom(hex: string, conn: HandshakeConnection): void;
  unbind(conn: HandshakeConnection): void;
  pendingNewSessions(): number;
  noteDroppedAfterHandoff(bytes: number): void;
}

/** Smallest accepted maxBufferedBytes: two maximal TLS records. */
export const MIN_BUFFERED_BYTES = 32 * 1024;
const DEFAULT_QUIESCE_MS = 2000;

export interface HandshakeEngineStats {
  /** Bytes OpenSSL wrote after a hand-off (dropped; should stay 0). */
  readonly bytesDroppedAfterHandoff: number;
  /** Managed newSession callbacks not yet called back. */
  readonly pendingNewSessionCallbacks: number;
  /** Connections currently in the handshake. */
  readonly inProgress: number;
}

export class HandshakeEngine {
  private readonly byClientRandom = new Map<string, HandshakeConnection>();
  private readonly bySocket = new WeakMap<tls.TLSSocket, HandshakeConnection>();
  private readonly live = new Set<HandshakeConnection>();
  private pendingNewSession = 0;
  private droppedAfterHandoff = 0;
  private closed = false;
  private readonly ctx: EngineContext;
  private readonly listeners: Array<[string, (...args: unknown[]) => void]> = [];

  constructor(private readonly server: tls.Server, opts: HandshakeEngineOptions) {
    if (!(opts.handshakeTimeoutMs > 0)) throw new RangeError('handshakeTimeoutMs must be > 0');
    if (!(opts.maxBufferedBytes >= MIN_BUFFERED_BYTES)) throw new RangeError(`maxBufferedBytes must be >= ${MIN_BUFFERED_BYTES}`);
    const quiesceMs = opts.quiesceMs ?? DEFAULT_QUIESCE_MS;
    if (!(quiesceMs >= 0)) throw new RangeError('quiesceMs must be >= 0');
    this.ctx = {
      server,
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
      maxBufferedBytes: opts.maxBufferedBytes,
      quiesceMs,
      bindClientRandom: (hex, conn) => this.byClientRandom.set(hex, conn),
      unbind: (conn) => {
        this.live.delete(conn);
        if (conn.clientRandomHex && this.byClientRandom.get(conn.clientRandomHex) === conn) {
          this.byClientRandom.delete(conn.clientRandomHex);
        }
      },
      pendingNewSessions: () => this.pendingNewSession,
      noteDroppedAfterHandoff: (n) => {
        this.droppedAfterHandoff += n;
      },
    };

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
    const conn = new HandshakeConnection(this.ctx, raw, hooks);
    this.live.add(conn);
    return conn.run();
  }

  get stats(): HandshakeEngineStats {
    return {
      bytesDroppedAfterHandoff: this.droppedAfterHandoff,
      pendingNewSessionCallbacks: this.pendingNewSession,
      inProgress: this.live.size,
    };
  }

  /** Detach from the server (connections in progress fail with reason `internal_error`). */
  close(): void {
    this.closed = true;
    for (const [event, fn] of this.listeners) this.server.off(event, fn);
    this.listeners.length = 0;
    for (const conn of [...this.live]) conn.fail('internal_error', 'handshake engine closed');
  }
}
