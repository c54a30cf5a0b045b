// One connection's way through the handshake engine: the state machine of
// docs/design.md "The handshake engine" (feeding → finished-fed → detached,
// or → fallback-pending → passthrough when there is no exact state).
// Invariants:
//   - OpenSSL gets whole records, one per event-loop turn, and never a byte
//     after the record that carries the client's Finished.
//   - Everything OpenSSL writes goes to the client unchanged, and the TX
//     state handed off is derived from exactly those bytes.
//   - Until `detached`, OpenSSL's state is complete and consistent with the
//     wire, so any doubt falls back to the TLSSocket instead of failing.

import type net from 'node:net';
import { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { describeError } from '../errors.js';
import { type TlsRecord, TlsWireError } from '../tls/records.js';
import type { EngineFallbackReason } from '../vocabulary.js';
import type { HandshakeEngine, HandshakeFacts, HandshakeResult, OffloadHooks } from './engine.js';
import { HandshakeError, type HandshakeErrorReason, engineFailureReason } from './failure.js';
import { negotiatedFacts, tlsFactsOf } from './facts.js';
import { handoffKeys } from './handoff-state.js';
import { guardTlsOverJsStream } from './js-stream-guard.js';
import type { KeylogEntry } from './keylog.js';
import { HandshakeTracker } from './tracker.js';
import { ClientInput, ServerOutput, nextTurn } from './wire.js';

type Phase = 'feeding' | 'finished-fed' | 'fallback-pending' | 'passthrough' | 'detached';

const noop = (): void => {};

export class HandshakeConnection {
  private phase: Phase = 'feeding';
  private settled = false;
  private handedOff = false;
  private readonly tracker = new HandshakeTracker();
  private readonly input: ClientInput;
  private readonly output: ServerOutput;
  /**
   * What the engine's TLSSocket sits on. A tls.Server's 'connection' event
   * documentedly accepts any Duplex; our own means every ciphertext byte in
   * both directions passes through code that can frame, hold back or drop it.
   */
  private readonly duplex: Duplex;
  private tlsSocket: tls.TLSSocket | null = null;
  private secure = false;
  private resolveResult: (r: HandshakeResult) => void = noop;
  private rejectResult: (e: Error) => void = noop;
  private timer: NodeJS.Timeout | null = null;
  private pumping = false;
  /** The tracker found a record the client sent malformed (the engine then fell back to let OpenSSL judge it). */
  private clientSentMalformed = false;
  private fallbackReason: EngineFallbackReason = 'tracker_desync';
  /** offload()'s answer, carried on the hand-off. */
  private offloadAnswer = false;
  clientRandomHex: string | null = null;

  constructor(private readonly engine: HandshakeEngine, private readonly raw: net.Socket, private readonly hooks: OffloadHooks) {
    this.duplex = new Duplex({
      allowHalfOpen: true,
      // OpenSSL wants more input.
      read: () => {
        if (this.phase === 'passthrough' && this.raw.isPaused()) this.raw.resume();
      },
      write: (chunk: Buffer, _encoding, done) => this.onEngineOutput(chunk, () => done()),
      // OpenSSL ended its side (after close_notify or a fatal alert).
      final: (done) => {
        if (this.phase !== 'detached') this.raw.end();
        done();
      },
      destroy: (err, done) => {
        this.onEngineDestroyed();
        done(err);
      },
    });
    this.input = new ClientInput(raw, engine.opts.maxBufferedBytes);
    this.output = new ServerOutput(raw, this.tracker);
  }

  run(): Promise<HandshakeResult> {
    const result = new Promise<HandshakeResult>((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.raw.on('data', this.onRawData);
    this.raw.on('end', this.onRawEnd);
    this.raw.on('error', this.onRawError);
    this.raw.on('close', this.onRawClose);
    this.timer = setTimeout(() => this.fail('timeout', `no result within ${this.engine.opts.handshakeTimeoutMs} ms`), this.engine.opts.handshakeTimeoutMs);
    // Documented: "any Duplex stream can be passed" to a tls.Server's 'connection' event.
    this.engine.server.emit('connection', this.duplex);
    return result;
  }

  private readonly onRawData = (chunk: Buffer): void => {
    if (this.phase === 'passthrough') {
      if (!this.duplex.push(chunk)) this.raw.pause();
      return;
    }
    if (this.phase === 'detached') return;
    this.input.framer.push(chunk);
    if (this.phase !== 'feeding') return;
    if (!this.input.withinBudget()) {
      return this.fail('handshake_buffer_limit', `over ${this.engine.opts.maxBufferedBytes} bytes buffered before the client Finished`);
    }
    this.kick();
  };

  private readonly onRawEnd = (): void => {
    this.input.ended = true;
    if (this.phase === 'passthrough') this.duplex.push(null);
    else this.kick();
  };

  private readonly onRawError = (err: Error): void => this.onRawGone(err);
  private readonly onRawClose = (): void => this.onRawGone(undefined);

  private onRawGone(err: Error | undefined): void {
    if (this.settled) {
      if (this.phase === 'passthrough') this.duplex.destroy(err);
    } else if (err) {
      this.fail('reset', describeError(err), err);
    } else {
      this.fail(this.tracker.clientAlert ? 'peer_alert' : 'reset', 'connection closed during the handshake');
    }
  }

  private kick(): void {
    if (this.phase === 'feeding' && !this.settled && !this.pumping) void this.pump();
  }

  /** Feed OpenSSL one whole record per turn until the client Finished. */
  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.phase === 'feeding' && !this.settled) {
        let rec: TlsRecord | null;
        let verdict;
        try {
          rec = this.input.framer.peek();
          if (!rec) {
            this.input.releaseBackpressure();
            if (this.input.ended) this.fail(this.tracker.clientAlert ? 'peer_alert' : 'reset', 'client closed during the handshake');
            return;
          }
          verdict = this.tracker.classifyInbound(rec);
          // From the ClientHello: it binds key-log lines to this connection.
          const clientRandom = this.tracker.secrets.clientRandom;
          if (!this.clientRandomHex && clientRandom) {
            this.clientRandomHex = clientRandom.toString('hex');
            this.engine.bindClientRandom(this.clientRandomHex, this);
          }
        } catch (err) {
          return this.onWireError(err);
        }
        if (verdict === 'blocked') return; // kicked again on the next key-log line or server record
        if (verdict === 'finished') return this.feedFinished(rec);
        this.input.framer.take();
        if (!this.input.admit(rec.raw.length)) {
          return this.fail('handshake_buffer_limit', `client handshake flight over ${this.engine.opts.maxBufferedBytes} bytes`);
        }
        this.feed(rec.raw);
        // One record per turn: OpenSSL processes it (and emits its key-log
        // lines) before the next record is classified.
        await nextTurn();
      }
    } catch (err) {
      // A bug below (the pump runs detached: `void this.pump()`): this one
      // handshake fails, counted as internal_error, instead of an unhandled rejection.
      this.fail('internal_error', describeError(err), err);
    } finally {
      this.pumping = false;
    }
  }

  private feed(record: Buffer): void {
    this.input.records++;
    this.duplex.push(record);
  }

  private onWireError(err: unknown): void {
    if (err instanceof TlsWireError && err.notTls && this.input.records === 0) {
      return this.fail('protocol_error', err.message, err, true);
    }
    // OpenSSL has seen only whole, unmodified records: let it judge the rest.
    // If the client closes before OpenSSL says why, the malformed bytes are
    // the cause, not the FIN that came with them.
    this.clientSentMalformed = true;
    this.fallback('tracker_desync');
  }

  private feedFinished(rec: TlsRecord): void {
    const facts = negotiatedFacts(this.tracker.negotiation);
    if (!facts) return this.fallback('cipher_not_offloadable');
    if (!this.input.canStop) return this.fallback('read_stop_unavailable');
    try {
      this.offloadAnswer = this.hooks.offload(facts) === true;
    } catch {
      // The state is as exact as with any answer: the keys just stay in JS.
      this.offloadAnswer = false;
    }
    this.input.framer.take();
    // The hook runs the decision synchronously; the client may have reset the
    // connection meanwhile (its handle is gone then and reads cannot stop).
    if (this.raw.destroyed) return this.fail('reset', 'connection closed during the handshake');
    this.phase = 'finished-fed';
    this.raw.off('data', this.onRawData);
    this.input.stopAtFinished(); // what follows the Finished ends up in `leftover`
    this.feed(rec.raw); // may emit 'secureConnection' synchronously
  }

  /** OpenSSL wrote ciphertext; `done` lets it write more. */
  private onEngineOutput(chunk: Buffer, done: () => void): void {
    if (this.phase === 'detached') {
      if (this.handedOff) this.engine.noteDroppedAfterHandoff(chunk.length);
      done();
      return;
    }
    const flushed = this.output.forward(chunk);
    if (this.phase === 'feeding' || this.phase === 'finished-fed') this.trackOutput(chunk);
    if (flushed) done();
    else this.raw.once('drain', done);
  }

  private trackOutput(chunk: Buffer): void {
    try {
      this.output.track(chunk);
    } catch {
      return this.fallback('tracker_desync');
    }
    const n = this.tracker.negotiation;
    if (n.serverHello && !n.kernelCipher) return this.fallback('cipher_not_offloadable');
    this.kick();
  }

  private onEngineDestroyed(): void {
    if (this.phase === 'detached') return;
    if (this.phase === 'passthrough' && this.settled) {
      this.raw.destroy();
      return;
    }
    // Let 'tlsClientError' (which names the cause) arrive first.
    setImmediate(() => this.fail(this.failureReason(undefined), 'TLS engine closed during the handshake'));
  }

  /** `err`: what Node's TLS reported, if anything. */
  private failureReason(err: unknown): HandshakeErrorReason {
    return engineFailureReason(err, {
      certRejected: Boolean(this.tlsSocket?.authorizationError) && !this.secure,
      serverAlert: this.tracker.serverAlert,
      clientAlert: this.tracker.clientAlert,
      peerClosedCleanly: this.input.ended && !this.clientSentMalformed,
    });
  }

  /** The engine's TLS socket, first seen: its writes over our Duplex fail instead of asserting (js-stream-guard.ts). */
  private adopt(tlsSocket: tls.TLSSocket): void {
    if (this.tlsSocket === tlsSocket) return;
    this.tlsSocket = tlsSocket;
    guardTlsOverJsStream(tlsSocket, () => this.hooks.jsStreamWriteRefused?.());
  }

  onKeylog(entry: KeylogEntry, tlsSocket: tls.TLSSocket): void {
    this.adopt(tlsSocket);
    if (this.phase !== 'feeding' && this.phase !== 'finished-fed') {
      entry.secret.fill(0);
      return;
    }
    try {
      this.tracker.addSecret(entry);
    } catch {
      return this.fallback('tracker_desync');
    }
    this.kick();
  }

  onTlsClientError(err: Error, tlsSocket: tls.TLSSocket): void {
    this.adopt(tlsSocket);
    this.fail(this.failureReason(err), describeError(err), err);
  }

  onSecure(tlsSocket: tls.TLSSocket): void {
    this.adopt(tlsSocket);
    this.secure = true;
    if (this.phase === 'passthrough') this.resolveUserspace();
    // OpenSSL finished without our seeing the client Finished: our view is wrong, OpenSSL's is not.
    else if (this.phase === 'feeding') this.fallback('tracker_desync');
    else if (this.phase === 'finished-fed') void this.quiesce();
    // fallback-pending resolves after its flush
  }

  /** Stay on the TLSSocket: give OpenSSL everything held back and pipe the rest. */
  private fallback(reason: EngineFallbackReason): void {
    if (this.settled || (this.phase !== 'feeding' && this.phase !== 'finished-fed')) return;
    this.phase = 'fallback-pending';
    this.fallbackReason = reason;
    this.tracker.wipe();
    // We may be inside OpenSSL's own write or a push(): do not re-enter it synchronously.
    setImmediate(() => this.enterPassthrough());
  }

  private enterPassthrough(): void {
    if (this.settled) return;
    this.phase = 'passthrough';
    const rest = this.input.framer.takeAll();
    if (!this.raw.listeners('data').includes(this.onRawData)) this.raw.on('data', this.onRawData);
    if (rest.length) this.duplex.push(rest);
    if (this.input.ended) this.duplex.push(null);
    this.input.resume();
    if (this.secure) this.resolveUserspace();
  }

  private facts(s: tls.TLSSocket): HandshakeFacts {
    const n = this.tracker.negotiation;
    const counts = { drainedAtStop: this.input.drainedAtStop, earlyDataRecordsSkipped: this.tracker.earlyDataRecordsSkipped };
    return { ...tlsFactsOf(s, n), helloRetryRequest: n.helloRetryRequest, counts };
  }

  private settle(): void {
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.engine.unbind(this);
  }

  private resolveUserspace(): void {
    const s = this.tlsSocket;
    if (this.settled || !s) return;
    this.settle();
    this.resolveResult({ mode: 'userspace', tlsSocket: s, facts: this.facts(s), reason: this.fallbackReason });
  }

  /** Wait until OpenSSL has written everything it will write after the handshake, then hand off. */
  private async quiesce(): Promise<void> {
    const verdict = await this.output.untilQuiet({
      pendingNewSessions: () => this.engine.pendingNewSessions,
      active: () => !this.settled && this.phase === 'finished-fed',
    });
    if (verdict === 'quiet') this.handoff();
    else if (verdict === 'not_quiet') this.fallback('engine_not_quiet');
  }

  private handoff(): void {
    const s = this.tlsSocket;
    if (!s) return this.fallback('tracker_desync');
    const keys = handoffKeys(this.tracker, s);
    if (typeof keys === 'string') return this.fallback(keys);
    // Point of no return: OpenSSL never sees or emits another byte of this connection.
    this.phase = 'detached';
    this.handedOff = true;
    this.settle();
    this.raw.off('end', this.onRawEnd);
    this.raw.off('error', this.onRawError);
    this.raw.off('close', this.onRawClose);
    this.raw.on('error', noop); // until the new owner attaches its own
    const leftover = this.input.framer.takeAll();
    const facts = this.facts(s);
    this.tracker.wipe();
    s.on('error', noop);
    s.destroy();
    this.resolveResult({ mode: 'handoff', raw: this.raw, facts, ...keys, leftover, peerEnded: this.input.ended, offload: this.offloadAnswer });
  }

  fail(reason: HandshakeErrorReason, message: string, cause?: unknown, notTls = false): void {
    if (this.settled) return;
    this.phase = 'detached';
    this.settle();
    this.tracker.wipe();
    this.raw.off('data', this.onRawData);
    this.raw.on('error', noop);
    if (this.tlsSocket) {
      this.tlsSocket.on('error', noop);
      this.tlsSocket.destroy();
    }
    this.duplex.destroy();
    this.raw.destroy();
    this.rejectResult(new HandshakeError(reason, message, { cause, notTls }));
  }
}
