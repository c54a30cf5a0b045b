// The lends of one RecordLayerStream (splice.ts): at most one TX and one RX
// lend at a time, the spliced byte counts (finished runs plus the running
// ones, read live), and the one rule that keeps fds safe — every pump is
// closed before the raw socket's fd is, whoever destroys the socket.

import type { KernelSocket } from './kernel.js';
import type { TxOp } from './control.js';
import { RxLend, TxLend, closeBeforeSocket } from './splice.js';
import type { SpliceOutcome, SplicePumpFactory } from './splice.js';

/** What the lends need of their stream (stream.ts wires it). */
export interface SpliceStreamHost {
  runTx(op: TxOp): void;
  /** No more application data may leave (close_notify sent, fatal, destroyed). */
  txClosed(): boolean;
  /** Between TX runs, holding the slot: the key usage check. */
  afterSplice(): void;
  rxLive(): boolean;
  readOne(): 'more' | 'ended' | 'again' | 'data';
  pauseRx(): void;
  /** RX is back from a lend: read again if the reader wants. */
  resumeRx(): void;
  /** Push everything in the stream's readable buffer to its reader. */
  drainReadable(): void;
  /** Bytes the stream's Writable holds (queued or being written). */
  writableLength(): number;
}

export class StreamSplices {
  private txLend: TxLend | null = null;
  /** A TX lend waiting for the stream's own writes to leave first. */
  private txWaiting: TxLend | null = null;
  private rxLend: RxLend | null = null;
  private rawGuarded = false;
  /** Bytes of finished runs. */
  private inDone = 0;
  private outDone = 0;

  constructor(
    private readonly kernel: KernelSocket,
    private readonly pumps: SplicePumpFactory,
    private readonly host: SpliceStreamHost,
  ) {}

  get splicedIn(): number {
    return this.inDone + (this.rxLend?.live() ?? 0);
  }

  get splicedOut(): number {
    return this.outDone + (this.txLend?.live() ?? 0);
  }

  get rxLent(): boolean {
    return this.rxLend?.active ?? false;
  }

  canLend(dir: 'tx' | 'rx'): boolean {
    return dir === 'tx' ? !this.txLend?.active : !this.rxLend?.active;
  }

  lendTx(fromFd: number, onEnd: (o: SpliceOutcome) => void, limit?: number): void {
    const { host } = this;
    const lend: TxLend = new TxLend(
      {
        fd: this.kernel.fd,
        events: this.kernel.events,
        runTx: (op) => host.runTx(op),
        txClosed: () => host.txClosed(),
        spliced: (n) => {
          this.outDone += n;
        },
        betweenRuns: () => host.afterSplice(),
      },
      this.pumps,
      fromFd,
      (o) => {
        if (this.txLend === lend) this.txLend = null;
        onEnd(o);
      },
      limit,
    );
    this.txLend = lend;
    this.guardRaw();
    // Writes still in the stream's Writable queue go first: afterWrite() begins it after the last.
    if (host.writableLength() === 0) lend.begin();
    else this.txWaiting = lend;
  }

  lendRx(toFd: number, flush: (cb: () => void) => void, onEnd: (o: SpliceOutcome) => void): void {
    const { host } = this;
    const lend: RxLend = new RxLend(
      {
        fd: this.kernel.fd,
        events: this.kernel.events,
        rxLive: () => host.rxLive(),
        spliced: (n) => {
          this.inDone += n;
        },
        readOne: () => host.readOne(),
        rxReturned: () => host.resumeRx(),
      },
      this.pumps,
      toFd,
      (cb) => {
        // Everything decrypted so far goes to the reader (its 'data'), then the owner delivers it.
        host.drainReadable();
        flush(cb);
      },
      (o) => {
        if (this.rxLend === lend) this.rxLend = null;
        onEnd(o);
      },
    );
    this.rxLend = lend;
    host.pauseRx();
    this.guardRaw();
    lend.begin();
  }

  /** Another TX operation was queued: a running TX run gives the slot up. */
  yieldTx(): void {
    this.txLend?.yieldSlot();
  }

  /** A data write of the stream completed: a waiting TX lend starts once the Writable is empty. */
  afterWrite(): void {
    const lend = this.txWaiting;
    if (!lend || this.host.writableLength() > 0) return;
    this.txWaiting = null;
    lend.begin();
  }

  stop(): void {
    this.txLend?.stop();
    this.rxLend?.stop();
    const waiting = this.txWaiting;
    if (waiting) {
      this.txWaiting = null;
      waiting.begin(); // ends at once as 'stopped', in TX order
    }
  }

  close(): void {
    this.txWaiting = null;
    this.txLend?.close();
    this.rxLend?.close();
    this.txLend = null;
    this.rxLend = null;
  }

  /** The raw socket may be destroyed by Node itself (a read error in `tx` mode): the pumps go first. */
  private guardRaw(): void {
    if (this.rawGuarded) return;
    this.rawGuarded = true;
    closeBeforeSocket(this.kernel.raw, () => this.close());
  }
}
