// The raw socket's two directions during an engine handshake.
// ClientInput: the client's ciphertext framed into records, the buffering
// budget (config `maxHandshakeBufferBytes`) with backpressure, and stopping
// the fd reads right at the client's Finished (read-control.ts), so that
// every byte read after it is known and handed off as `leftover`.
// ServerOutput: what OpenSSL writes, forwarded to the client unchanged and,
// until the hand-off, framed and followed by the tracker, so the TX state
// handed off is derived from exactly the bytes the client got. After the
// handshake OpenSSL may still write (TLS 1.3 tickets, sent only after the
// newSession callbacks): the hand-off waits until it is quiet.

import type net from 'node:net';
import { RecordFramer } from '../tls/records.js';
import { canControlReading, resumeReading, stopReading } from './read-control.js';
import type { HandshakeTracker } from './tracker.js';

/** Backstop above maxBufferedBytes: one in-flight socket read plus slack. */
const HARD_SLACK = 128 * 1024;

export class ClientInput {
  readonly framer = new RecordFramer();
  /** Records given to OpenSSL (before the first, an unframeable record is not TLS). */
  records = 0;
  drainedAtStop = 0;
  /** The client's FIN was read. */
  ended = false;
  /** This Node has what stopReading() needs. */
  readonly canStop: boolean;
  private pausedForBuffer = false;
  private stopped = false;
  /** Client handshake ciphertext given to OpenSSL so far. */
  private flightBytes = 0;

  constructor(private readonly raw: net.Socket, private readonly maxBufferedBytes: number) {
    this.canStop = canControlReading(raw);
  }

  /** After a chunk was framed before the Finished: false when over the backstop; at the budget, reading pauses. */
  withinBudget(): boolean {
    // Backstop: pause() keeps this from happening with a plain net.Socket.
    if (this.framer.length > this.maxBufferedBytes + HARD_SLACK) return false;
    if (this.framer.length >= this.maxBufferedBytes && !this.pausedForBuffer) {
      // Backpressure: Node stops reading the fd once its own buffer is full.
      this.pausedForBuffer = true;
      this.raw.pause();
    }
    return true;
  }

  /** The framer ran dry: read again once under half the budget. */
  releaseBackpressure(): void {
    if (this.pausedForBuffer && this.framer.length < this.maxBufferedBytes / 2) {
      this.pausedForBuffer = false;
      this.raw.resume();
    }
  }

  /** Count a record given to OpenSSL: false when the client's flight is over the whole budget (not a real client). */
  admit(recordBytes: number): boolean {
    if (this.flightBytes + recordBytes > this.maxBufferedBytes) return false;
    this.flightBytes += recordBytes;
    return true;
  }

  /**
   * OpenSSL needs nothing more from the client: stop reading the fd now, so
   * what follows the Finished stays bounded. What Node had already read is
   * framed here (the caller removed its 'data' listener first).
   */
  stopAtFinished(): void {
    const drained = stopReading(this.raw);
    this.drainedAtStop = drained.length;
    this.framer.push(drained);
    this.stopped = true;
    this.pausedForBuffer = false;
  }

  /** The connection stays on the TLSSocket (passthrough): read the socket again, however reading was held. */
  resume(): void {
    if (this.stopped) {
      this.stopped = false;
      resumeReading(this.raw);
    } else if (this.pausedForBuffer) {
      this.pausedForBuffer = false;
      this.raw.resume();
    }
  }
}

/** Event-loop turns without engine output that count as "quiet" after the handshake. */
const QUIET_TURNS = 3;
/** Longest wait for OpenSSL to go quiet after the handshake (tickets, newSession callbacks). */
const QUIESCE_MS = 2000;

export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ServerOutput {
  private readonly framer = new RecordFramer();
  /** Writes OpenSSL made (a new one restarts the quiet count). */
  private events = 0;
  /** Writes to the raw socket not flushed yet. */
  private pendingWrites = 0;

  constructor(private readonly raw: net.Socket, private readonly tracker: HandshakeTracker) {}

  /** Send a chunk to the client; false when the socket wants a 'drain' first. */
  forward(chunk: Buffer): boolean {
    this.events++;
    this.pendingWrites++;
    return this.raw.write(chunk, () => {
      this.pendingWrites--;
    });
  }

  /** Follow the whole records of a forwarded chunk. Throws TlsWireError when the stream makes no sense. */
  track(chunk: Buffer): void {
    this.framer.push(chunk);
    for (let rec = this.framer.take(); rec; rec = this.framer.take()) {
      this.tracker.onOutboundRecord(rec);
    }
  }

  /**
   * Wait for a few turns without output and with nothing unsent or
   * untracked (a partial record, records waiting for a key). `quiet`: hand
   * off — at the deadline with only newSession callbacks pending too (their
   * tickets are dropped; the state stays exact); `not_quiet`: output still
   * unsent or untracked at the deadline; `aborted`: the connection moved on.
   */
  async untilQuiet(w: { pendingNewSessions(): number; active(): boolean }): Promise<'quiet' | 'not_quiet' | 'aborted'> {
    const deadline = Date.now() + QUIESCE_MS;
    let quiet = 0;
    let seen = this.events;
    for (;;) {
      const waiting = w.pendingNewSessions() > 0 || this.pendingWrites > 0;
      await (waiting ? sleep(1) : nextTurn());
      if (!w.active()) return 'aborted';
      if (this.events !== seen) {
        seen = this.events;
        quiet = 0;
      } else {
        quiet++;
      }
      const clean = this.framer.length === 0 && this.tracker.outboundPending === 0 && this.pendingWrites === 0;
      if (clean && w.pendingNewSessions() === 0 && quiet >= QUIET_TURNS) return 'quiet';
      if (Date.now() > deadline) return clean ? 'quiet' : 'not_quiet';
    }
  }
}
