// What OpenSSL writes during an engine handshake: forwarded to the client
// unchanged and, until the hand-off, framed and followed by the tracker, so
// the TX state handed off is derived from exactly the bytes the client got.
// After the handshake OpenSSL may still write (TLS 1.3 tickets, sent only
// after the newSession callbacks): the hand-off waits until it is quiet.

import type net from 'node:net';
import { RecordFramer } from '../tls/records.js';
import type { HandshakeTracker } from './tracker.js';

/** Event-loop turns without engine output that count as "quiet" after the handshake. */
const QUIET_TURNS = 3;

export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ServerOutput {
  private readonly framer = new RecordFramer();
  bytesOut = 0;
  /** Whole records followed by the tracker (the hand-off's `recordsOut`). */
  records = 0;
  /** Writes OpenSSL made (a new one restarts the quiet count). */
  private events = 0;
  /** Writes to the raw socket not flushed yet. */
  private pendingWrites = 0;

  constructor(private readonly raw: net.Socket, private readonly tracker: HandshakeTracker) {}

  /** Send a chunk to the client; false when the socket wants a 'drain' first. */
  forward(chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
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
      this.records++;
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
  async untilQuiet(w: { quiesceMs: number; pendingNewSessions(): number; active(): boolean }): Promise<'quiet' | 'not_quiet' | 'aborted'> {
    const deadline = Date.now() + w.quiesceMs;
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
