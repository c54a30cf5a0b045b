// The client's side of the raw socket during an engine handshake: its
// ciphertext framed into records, the buffering budget (config
// `maxHandshakeBufferBytes`) with backpressure, and stopping the fd reads
// right at the client's Finished (read-control.ts), so that every byte read
// after it is known and handed off as `leftover`.

import type net from 'node:net';
import { RecordFramer } from '../tls/records.js';
import { canControlReading, resumeReading, stopReading } from './read-control.js';

/** Backstop above maxBufferedBytes: one in-flight socket read plus slack. */
const HARD_SLACK = 128 * 1024;

export class ClientInput {
  readonly framer = new RecordFramer();
  /** Records given to OpenSSL. */
  records = 0;
  /** Bytes read from the socket, including what stopReading() drained. */
  bytesIn = 0;
  /** Of `bytesIn`: bytes Node had already read into the socket's stream buffer when reading stopped. */
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
    this.bytesIn += drained.length;
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
