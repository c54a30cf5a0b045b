// One connection's way through the handshake engine (see engine.ts for the
// big picture). State machine:
//
//   feeding ──(client Finished classified, offload() asked)──► finished-fed ──(secure + quiet)──► detached (handoff)
//      │                                                          │
//      └──(no exact state: suite not trackable / any doubt)──► fallback-pending ──► passthrough (userspace)
//
// offload()'s answer does not choose between hand-off and passthrough: it
// only rides on the hand-off (`offload`), and the caller puts the keys in the
// kernel or keeps them in its JS record layer. Passthrough keeps Node's TLS
// on the engine's JS Duplex for the connection's whole life, where Node can
// hit an internal assertion that ends the process (nodejs/node#35384), so it
// is only for connections without an exact state to hand off.
//
// Invariants:
//   - OpenSSL gets whole records, one per event-loop turn, and never a byte
//     after the record that carries the client's Finished.
//   - Everything OpenSSL writes goes to the client unchanged, and the TX
//     state handed off is derived from exactly those bytes.
//   - Until `detached`, OpenSSL's state is complete and consistent with the
//     wire, so any doubt falls back to the TLSSocket instead of failing.

import type net from 'node:net';
import type tls from 'node:tls';
import { describeError } from '../errors.js';
import type { EngineSink } from './engine-duplex.js';
import { EngineDuplex } from './engine-duplex.js';
import type { HandshakeFailureReason } from './errors.js';
import { HandshakeError, TlsWireError, reasonFromTlsError } from './errors.js';
import { collectFacts } from './facts.js';
import { guardTlsOverJsStream } from './js-stream-guard.js';
import type { KeylogEntry } from './keylog.js';
import { canControlReading, stopReading, resumeReading } from './read-control.js';
import type { TlsRecord } from './records.js';
import { RecordFramer } from './records.js';
import type { FinalState } from './tracker.js';
import { HandshakeTracker } from './tracker.js';
import type { HandshakeCounts, HandshakeResult, NegotiatedFacts, OffloadHooks, UserspaceReason } from './types.js';

/** Event-loop turns without engine output that count as "quiet" after the handshake. */
const QUIET_TURNS = 3;
/** Backstop above maxBufferedBytes: one in-flight socket read plus slack. */
const HARD_SLACK = 128 * 1024;

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

type Phase = 'feeding' | 'finished-fed' | 'fallback-pending' | 'passthrough' | 'detached';

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const noop = (): void => {};

export class HandshakeConnection implements EngineSink {
  private phase: Phase = 'feeding';
  private settled = false;
  private handedOff = false;
  private readonly tracker = new HandshakeTracker();
  private readonly inFramer = new RecordFramer();
  private readonly outFramer = new RecordFramer();
  private readonly duplex: EngineDuplex;
  private tlsSocket: tls.TLSSocket | null = null;
  private secure = false;
  private resolveResult: (r: HandshakeResult) => void = noop;
  private rejectResult: (e: Error) => void = noop;
  private timer: NodeJS.Timeout | null = null;
  private pumping = false;
  private rawEnded = false;
  /** The tracker found a record the client sent malformed (the engine then fell back to let OpenSSL judge it). */
  private clientSentMalformed = false;
  private readingStopped = false;
  private pausedForBuffer = false;
  private readonly canStopReading: boolean;
  private fallbackReason: UserspaceReason = 'tracker_desync';
  /** offload()'s answer, carried on the hand-off. */
  private offloadAnswer = false;
  private pendingWrites = 0;
  private outputEvents = 0;
  private recordsIn = 0;
  private recordsOut = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  /** Client handshake ciphertext given to OpenSSL so far (bounded by maxBufferedBytes). */
  private handshakeBytes = 0;
  private drainedAtStop = 0;
  clientRandomHex: string | null = null;

  constructor(private readonly ctx: EngineContext, private readonly raw: net.Socket, private readonly hooks: OffloadHooks) {
    this.duplex = new EngineDuplex(this);
    this.canStopReading = canControlReading(raw);
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
    this.timer = setTimeout(() => this.fail('timeout', `no result within ${this.ctx.handshakeTimeoutMs} ms`), this.ctx.handshakeTimeoutMs);
    // Documented: "any Duplex stream can be passed" to a tls.Server's 'connection' event.
    this.ctx.server.emit('connection', this.duplex);
    return result;
  }

  // ------------------------------------------------------------ raw socket

  private readonly onRawData = (chunk: Buffer): void => {
    this.bytesIn += chunk.length;
    if (this.phase === 'passthrough') {
      if (!this.duplex.push(chunk)) this.raw.pause();
      return;
    }
    if (this.phase === 'detached') return;
    this.inFramer.push(chunk);
    if (this.phase !== 'feeding') return;
    if (this.inFramer.length > this.ctx.maxBufferedBytes + HARD_SLACK) {
      // Backstop: pause() keeps this from happening with a plain net.Socket.
      this.fail('buffer_limit', `over ${this.ctx.maxBufferedBytes} bytes buffered before the client Finished`);
      return;
    }
    if (this.inFramer.length >= this.ctx.maxBufferedBytes && !this.pausedForBuffer) {
      // Backpressure: Node stops reading the fd once its own buffer is full.
      this.pausedForBuffer = true;
      this.raw.pause();
    }
    this.kick();
  };

  private readonly onRawEnd = (): void => {
    this.rawEnded = true;
    if (this.phase === 'passthrough') this.duplex.push(null);
    else this.kick();
  };

  private readonly onRawError = (err: Error): void => {
    if (this.settled) {
      if (this.phase === 'passthrough') this.duplex.destroy(err);
      return;
    }
    this.fail('peer_closed', describeError(err), err);
  };

  private readonly onRawClose = (): void => {
    if (this.settled) {
      if (this.phase === 'passthrough') this.duplex.destroy();
      return;
    }
    this.fail(this.tracker.clientAlert ? 'peer_alert' : 'peer_closed', 'connection closed during the handshake');
  };

  // ------------------------------------------------------------ inbound

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
          rec = this.inFramer.peek();
          if (!rec) {
            this.releaseBackpressure();
            if (this.rawEnded) this.fail(this.tracker.clientAlert ? 'peer_alert' : 'peer_closed', 'client closed during the handshake');
            return;
          }
          verdict = this.tracker.classifyInbound(rec);
          this.bindClientRandom();
        } catch (err) {
          this.onWireError(err);
          return;
        }
        if (verdict === 'blocked') return; // kicked again on the next key-log line or server record
        if (verdict === 'finished') {
          this.feedFinished(rec);
          return;
        }
        this.inFramer.take();
        if (this.handshakeBytes + rec.raw.length > this.ctx.maxBufferedBytes) {
          // A client flight bigger than the whole buffering budget is not a real client.
          this.fail('buffer_limit', `client handshake flight over ${this.ctx.maxBufferedBytes} bytes`);
          return;
        }
        this.handshakeBytes += rec.raw.length;
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
    this.recordsIn++;
    this.duplex.push(record);
  }

  private releaseBackpressure(): void {
    if (this.pausedForBuffer && this.inFramer.length < this.ctx.maxBufferedBytes / 2) {
      this.pausedForBuffer = false;
      this.raw.resume();
    }
  }

  private bindClientRandom(): void {
    const cr = this.tracker.clientRandom;
    if (cr && !this.clientRandomHex) {
      this.clientRandomHex = cr.toString('hex');
      this.ctx.bindClientRandom(this.clientRandomHex, this);
    }
  }

  private onWireError(err: unknown): void {
    if (err instanceof TlsWireError && err.notTls && this.recordsIn === 0) {
      this.fail('not_tls', err.message, err);
      return;
    }
    // OpenSSL has seen only whole, unmodified records: let it judge the rest.
    // If the client closes before OpenSSL says why, the malformed bytes are
    // the cause, not the FIN that came with them.
    this.clientSentMalformed = true;
    this.fallback('tracker_desync');
  }

  private negotiatedFacts(): NegotiatedFacts | null {
    const n = this.tracker.negotiation;
    if (!n.version || !n.suite || !n.kernelCipher) return null;
    return {
      tlsVersion: n.version,
      cipher: n.suite.opensslName,
      ianaName: n.suite.ianaName,
      kernelCipher: n.kernelCipher,
      alpn: n.alpn,
      servername: n.servername,
      resumed: n.resumed,
    };
  }

  private feedFinished(rec: TlsRecord): void {
    const facts = this.negotiatedFacts();
    if (!facts) return this.fallback('cipher_not_offloadable');
    if (!this.canStopReading) return this.fallback('read_stop_unavailable');
    try {
      this.offloadAnswer = this.hooks.offload(facts) === true;
    } catch {
      // The state is as exact as with any answer: the keys just stay in JS.
      this.offloadAnswer = false;
    }
    this.inFramer.take();
    // The hook runs the decision synchronously; the client may have reset the
    // connection meanwhile (its handle is gone then and reads cannot stop).
    if (this.raw.destroyed) return this.fail('peer_closed', 'connection closed during the handshake');
    this.phase = 'finished-fed';
    // OpenSSL needs nothing more from the client: stop reading the fd now,
    // so what follows the Finished stays bounded and ends up in `leftover`.
    this.raw.off('data', this.onRawData);
    const drained = stopReading(this.raw);
    this.bytesIn += drained.length;
    this.drainedAtStop = drained.length;
    this.inFramer.push(drained);
    this.readingStopped = true;
    this.pausedForBuffer = false;
    this.feed(rec.raw); // may emit 'secureConnection' synchronously
  }

  // ------------------------------------------------------------ outbound

  onEngineOutput(chunk: Buffer, done: () => void): void {
    if (this.phase === 'detached') {
      if (this.handedOff) this.ctx.noteDroppedAfterHandoff(chunk.length);
      done();
      return;
    }
    this.bytesOut += chunk.length;
    this.outputEvents++;
    this.pendingWrites++;
    const flushed = this.raw.write(chunk, () => {
      this.pendingWrites--;
    });
    if (this.phase === 'feeding' || this.phase === 'finished-fed') this.trackOutput(chunk);
    if (flushed) done();
    else this.raw.once('drain', done);
  }

  private trackOutput(chunk: Buffer): void {
    this.outFramer.push(chunk);
    try {
      for (let rec = this.outFramer.take(); rec; rec = this.outFramer.take()) {
        this.recordsOut++;
        this.tracker.onOutboundRecord(rec);
      }
    } catch {
      this.fallback('tracker_desync');
      return;
    }
    const n = this.tracker.negotiation;
    if (n.serverHello && !n.kernelCipher) {
      this.fallback('cipher_not_offloadable');
      return;
    }
    this.kick();
  }

  onEngineRead(): void {
    if (this.phase === 'passthrough' && this.raw.isPaused()) this.raw.resume();
  }

  onEngineEnd(): void {
    if (this.phase !== 'detached') this.raw.end();
  }

  onEngineDestroyed(): void {
    if (this.phase === 'detached') return;
    if (this.phase === 'passthrough' && this.settled) {
      this.raw.destroy();
      return;
    }
    // Let 'tlsClientError' (which names the cause) arrive first.
    setImmediate(() => this.fail(this.guessFailureReason(), 'TLS engine closed during the handshake'));
  }

  private guessFailureReason(): HandshakeFailureReason {
    if (this.tlsSocket?.authorizationError && !this.secure) return 'client_cert_rejected';
    if (this.tracker.serverAlertReason) return this.tracker.serverAlertReason;
    if (this.tracker.clientAlert) return 'peer_alert';
    return this.rawEnded && !this.clientSentMalformed ? 'peer_closed' : 'protocol_error';
  }

  // ------------------------------------------------- events routed by the engine

  /**
   * The engine's TLS socket, first seen: its writes over our Duplex fail
   * instead of asserting (js-stream-guard.ts), for the handshake and for a
   * passthrough connection's whole life.
   */
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
      this.fallback('tracker_desync');
      return;
    }
    this.kick();
  }

  onTlsClientError(err: Error, tlsSocket: tls.TLSSocket): void {
    this.adopt(tlsSocket);
    let reason = reasonFromTlsError(err);
    if (reason === 'protocol_error') reason = this.guessFailureReason();
    this.fail(reason, describeError(err), err);
  }

  onSecure(tlsSocket: tls.TLSSocket): void {
    this.adopt(tlsSocket);
    this.secure = true;
    switch (this.phase) {
      case 'passthrough':
        this.resolveUserspace();
        return;
      case 'feeding':
        // OpenSSL finished without our seeing the client Finished: our view is wrong, OpenSSL's is not.
        this.fallback('tracker_desync');
        return;
      case 'finished-fed':
        void this.quiesce();
        return;
      default:
        return; // fallback-pending resolves after its flush
    }
  }

  // ------------------------------------------------------------ endings

  /** Stay on the TLSSocket: give OpenSSL everything held back and pipe the rest. */
  private fallback(reason: UserspaceReason): void {
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
    const rest = this.inFramer.takeAll();
    if (!this.raw.listeners('data').includes(this.onRawData)) this.raw.on('data', this.onRawData);
    if (rest.length) this.duplex.push(rest);
    if (this.rawEnded) this.duplex.push(null);
    if (this.readingStopped) {
      this.readingStopped = false;
      resumeReading(this.raw);
    } else if (this.pausedForBuffer) {
      this.pausedForBuffer = false;
      this.raw.resume();
    }
    if (this.secure) this.resolveUserspace();
  }

  private counts(leftoverBytes: number): HandshakeCounts {
    return {
      recordsIn: this.recordsIn,
      recordsOut: this.recordsOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      leftoverBytes,
      drainedAtStop: this.drainedAtStop,
      earlyDataRecordsSkipped: this.tracker.earlyDataRecordsSkipped,
    };
  }

  private wireFacts() {
    const n = this.tracker.negotiation;
    return { alpn: n.alpn, servername: n.servername, helloRetryRequest: n.helloRetryRequest };
  }

  private settle(): void {
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ctx.unbind(this);
  }

  private resolveUserspace(): void {
    const s = this.tlsSocket;
    if (this.settled || !s) return;
    this.settle();
    this.resolveResult({ mode: 'userspace', tlsSocket: s, facts: collectFacts(s, this.wireFacts(), this.counts(0)), reason: this.fallbackReason });
  }

  /** Wait until OpenSSL has written everything it will write after the handshake, then hand off. */
  private async quiesce(): Promise<void> {
    const deadline = Date.now() + this.ctx.quiesceMs;
    let quiet = 0;
    let seen = this.outputEvents;
    for (;;) {
      const waiting = this.ctx.pendingNewSessions() > 0 || this.pendingWrites > 0;
      await (waiting ? sleep(1) : nextTurn());
      if (this.settled || this.phase !== 'finished-fed') return;
      if (this.outputEvents !== seen) {
        seen = this.outputEvents;
        quiet = 0;
      } else {
        quiet++;
      }
      const clean = this.outFramer.length === 0 && this.tracker.outboundPending === 0 && this.pendingWrites === 0;
      const callbacks = this.ctx.pendingNewSessions() > 0;
      if (clean && !callbacks && quiet >= QUIET_TURNS) break;
      if (Date.now() > deadline) {
        if (!clean) return this.fallback('engine_not_quiet');
        break; // only newSession callbacks pending: their tickets are dropped, the state stays exact
      }
    }
    this.handoff();
  }

  private handoff(): void {
    const s = this.tlsSocket;
    if (!s) return this.fallback('tracker_desync');
    let state: FinalState;
    try {
      state = this.tracker.finalState();
    } catch {
      return this.fallback('handoff_verify_failed');
    }
    const n = this.tracker.negotiation;
    if (s.getCipher()?.name !== n.suite?.opensslName || s.getProtocol() !== n.version) {
      state.tx.wipe();
      state.rx.wipe();
      return this.fallback('tracker_desync');
    }
    // Point of no return: OpenSSL never sees or emits another byte of this connection.
    this.phase = 'detached';
    this.handedOff = true;
    this.settle();
    this.raw.off('end', this.onRawEnd);
    this.raw.off('error', this.onRawError);
    this.raw.off('close', this.onRawClose);
    this.raw.on('error', noop); // until the new owner attaches its own
    const leftover = this.inFramer.takeAll();
    const facts = collectFacts(s, this.wireFacts(), this.counts(leftover.length));
    const tx = state.tx.toCryptoInfo();
    const rx = state.rx.toCryptoInfo();
    const txSecret = state.tx.trafficSecret() ?? undefined;
    const rxSecret = state.rx.trafficSecret() ?? undefined;
    state.tx.wipe();
    state.rx.wipe();
    this.tracker.wipe();
    s.on('error', noop);
    s.destroy();
    this.resolveResult({
      mode: 'handoff',
      raw: this.raw,
      facts,
      tx,
      rx,
      ...(txSecret ? { txSecret } : {}),
      ...(rxSecret ? { rxSecret } : {}),
      leftover,
      peerEnded: this.rawEnded,
      offload: this.offloadAnswer,
    });
  }

  fail(reason: HandshakeFailureReason, message: string, cause?: unknown): void {
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
    this.rejectResult(new HandshakeError(reason, message, cause === undefined ? undefined : { cause }));
  }
}
