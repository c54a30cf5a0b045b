// Lending one direction of a kTLS connection to the native splice pump
// (native/: socket → pipe → socket with splice(2)), so proxied bytes stay in
// the kernel and never enter JS. Only a direction the kernel holds is lent,
// and only when JS has nothing of its own in flight on it:
//
//  TX (another socket → this connection's kTLS TX): an op in the stream's TX
//  order (stream.ts runTx). It starts once every earlier write and control
//  record left the raw socket, and holds the slot while a pump run moves
//  bytes. A run ends at a byte budget, so the slot comes free regularly: a
//  TLS 1.3 key usage check runs between runs, and a control record or write
//  queued meanwhile makes the running run stop (its pipe flushed) and goes
//  out before the next run. Ordering is everything: nothing overtakes a
//  spliced byte and no spliced byte overtakes an earlier write.
//
//  RX (this connection's kTLS RX → another socket): the stream stops reading;
//  the owner first delivers whatever the stream had already decrypted (flush),
//  then the pump moves the rest. A pump run ends at a non-data record (the
//  kernel refuses to splice alert/handshake records and keeps them queued) or
//  at what looks like EOF; either way the stream then reads exactly one record
//  through its own path (KernelRx.readOne: recvmsg + control state machine:
//  close_notify = the peer's end, KeyUpdate = the next RX key, a FIN = EOF)
//  and, while it still receives, starts the next run.
//
// The pump knows socket fds only: it must be closed before either socket's fd
// is, whoever destroys the socket (closeBeforeSocket below).

import type net from 'node:net';
import type { KtlsNative, NativeSyscallError, SplicePump, SpliceResult } from '../../native/index.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { KtlsErrorClass } from '../ktls/errno.js';
import type { Done, RecordLayerEvents } from './paths.js';
import type { TxOp } from './control.js';

export type SplicePumpFactory = (fromFd: number, toFd: number, onDone: (r: SpliceResult) => void) => SplicePump;

/**
 * Bytes per TX run. Between runs the TX slot is free for a moment: the TLS
 * 1.3 key usage limit is checked (ControlRecords.afterSplice). 4 MiB is at
 * most 4 Mi records even at one byte per record, inside the margin between
 * our rotation threshold (2^24 records) and AES-GCM's limit (2^24.5).
 */
export const TX_RUN_BUDGET = 4 * 1024 * 1024;

/** The addon's pump constructor, or null when this addon has none: nothing is spliced, JS pipes stay. */
export function splicePumpsOf(native: KtlsNative | null): SplicePumpFactory | null {
  if (!native || typeof native.createSplicePump !== 'function') return null;
  return (fromFd, toFd, onDone) => native.createSplicePump(fromFd, toFd, onDone);
}

/** Which socket a failed splice was about, from the lending connection's point of view. */
export type SpliceSide =
  /** This TLS connection's own socket (the client). */
  | 'peer'
  /** The socket the owner gave (the upstream). */
  | 'other'
  /** The pump itself (pipe, epoll registration). */
  | 'pump';

/** How a lent direction came back to its owner. */
export type SpliceOutcome =
  /** TX: the other socket's EOF after its last byte went out. RX: the peer ended (FIN or close_notify) and the stream ended its readable side. */
  | { readonly end: 'eof' }
  /**
   * TX lent for a byte count (spliceTx's `limit`): exactly that many bytes went
   * out, and not one byte past them was read from the other socket (what
   * follows there is the owner's: the next response on a keep-alive socket).
   */
  | { readonly end: 'done' }
  /** stop(), or the connection stopped sending (TX closed); everything read was delivered. */
  | { readonly end: 'stopped' }
  | { readonly end: 'failed'; readonly side: SpliceSide; readonly error: KtlsErrorClass; readonly cause: unknown };

/** What a TX lend needs of its stream. */
export interface TxLendHost {
  /** The raw socket's fd (kTLS TX). */
  readonly fd: number;
  readonly events: RecordLayerEvents;
  runTx(op: TxOp): void;
  /** No more application data may leave (close_notify sent, fatal alert, destroyed). */
  txClosed(): boolean;
  /** A run moved `bytes` into the kernel's TX: count them. */
  spliced(bytes: number): void;
  /** Between two runs, holding the TX slot: key usage check (may queue our KeyUpdate). */
  betweenRuns(): void;
}

/** What an RX lend needs of its stream. */
export interface RxLendHost {
  readonly fd: number;
  readonly events: RecordLayerEvents;
  /** Receiving has not ended and the stream is alive. */
  rxLive(): boolean;
  /** A run moved `bytes` the kernel decrypted: count them. */
  spliced(bytes: number): void;
  /**
   * Read exactly one record through the stream's own path. 'more': handled,
   * RX goes on; 'ended': RX ended (EOF, close_notify, fatal; the stream knows);
   * 'again': nothing to read yet; 'data': an application data record, pushed
   * to the stream's reader like any other (the lend flushes it on).
   */
  readOne(): 'more' | 'ended' | 'again' | 'data';
  /** The lend is over while RX lives on: the stream reads again. */
  rxReturned(): void;
}

function failure(r: SpliceResult, sideOf: (syscall: string) => SpliceSide, stageOf: (side: SpliceSide) => 'splice_in' | 'splice_out'): SpliceOutcome {
  const err: NativeSyscallError | null = r.error;
  const side = sideOf(err?.syscall ?? '');
  return { end: 'failed', side, error: classifyKtlsError(err, stageOf(side)), cause: err };
}

/**
 * The other socket ended `left` bytes before a lend's limit: a failure of the
 * other side (an upstream that cut its response short), not an errno.
 */
function shortOf(left: number): SpliceOutcome {
  const cause = Object.assign(new Error(`the other socket ended ${left} bytes before the lend's limit`), { code: 'ECONNRESET' });
  return { end: 'failed', side: 'other', error: { errno: 'UNKNOWN', kind: 'closed', stage: 'splice_in' }, cause };
}

/** Counts a failure on the kTLS socket or in the pump (the owner counts the other socket's). */
function countFailure(events: RecordLayerEvents, o: SpliceOutcome): void {
  if (o.end !== 'failed' || o.side === 'other') return;
  events.syscallError?.(o.error);
  if (o.error.kind === 'decrypt_error') events.decryptError?.('kernel');
}

/** Another socket → this connection's kTLS TX, in TX order. */
export class TxLend {
  private pump: SplicePump | null = null;
  /** The TX slot's release while a run holds it. */
  private release: Done | null = null;
  private stopping = false;
  private finished = false;
  /** Bytes still to move when lent for a byte count (null: until EOF). */
  private left: number | null;

  constructor(
    private readonly host: TxLendHost,
    private readonly make: SplicePumpFactory,
    private readonly fromFd: number,
    private readonly onEnd: (o: SpliceOutcome) => void,
    /** Move exactly this many bytes, then end `done` (undefined: until the other socket's EOF). */
    limit?: number,
  ) {
    if (limit !== undefined && !(Number.isSafeInteger(limit) && limit > 0)) throw new RangeError(`TX lend limit must be a positive safe integer, got ${limit}`);
    this.left = limit ?? null;
  }

  /** Queue the first run behind every TX operation already queued. */
  begin(): void {
    this.host.runTx((done) => this.run(done));
  }

  /** Bytes of the run in progress (live; finished runs are already counted through host.spliced). */
  live(): number {
    return this.release && this.pump ? this.pump.moved() : 0;
  }

  get active(): boolean {
    return !this.finished;
  }

  /** Another TX operation was queued: end the current run (flushed) so it goes out next. */
  yieldSlot(): void {
    if (this.release && !this.stopping) this.pump?.stop();
  }

  /** The owner takes TX back: the run ends flushed, then onEnd({ end: 'stopped' }). */
  stop(): void {
    if (this.finished || this.stopping) return;
    this.stopping = true;
    // Not running: queued behind other TX operations, run() ends it.
    if (this.release) this.pump?.stop();
  }

  /** Release the pump now, without a callback (the connection is going). Counts the run's bytes. */
  close(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.release && this.pump) this.host.spliced(this.pump.moved());
    this.release = null;
    this.pump?.close();
    this.pump = null;
  }

  private run(done: Done): void {
    if (this.finished) return done();
    if (this.stopping || this.host.txClosed()) return this.finish(done, { end: 'stopped' });
    try {
      this.pump ??= this.make(this.fromFd, this.host.fd, (r) => this.onRun(r));
      this.release = done;
      // The pump's budget counts bytes read from `from` and is never overrun:
      // with a limit, no byte past it leaves the other socket's queue.
      this.pump.start(this.left === null ? TX_RUN_BUDGET : Math.min(TX_RUN_BUDGET, this.left));
    } catch (err) {
      this.release = null;
      const o: SpliceOutcome = { end: 'failed', side: 'pump', error: classifyKtlsError(err, 'splice_out'), cause: err };
      this.finish(done, o);
    }
  }

  private onRun(r: SpliceResult): void {
    const done = this.release;
    if (this.finished || !done) return;
    this.release = null;
    this.host.spliced(r.bytes);
    if (this.left !== null && r.end !== 'error') {
      // A run that did not fail wrote every byte it read (the pipe is flushed first).
      this.left -= r.bytes;
      if (this.left <= 0) return this.finish(done, { end: 'done' });
      if (r.end === 'eof') return this.finish(done, shortOf(this.left));
    }
    if (r.end === 'budget' || (r.end === 'stopped' && !this.stopping)) {
      // Still holding the slot: the key usage check may queue our KeyUpdate,
      // then the next run goes behind it and everything else queued meanwhile.
      this.host.betweenRuns();
      this.host.runTx((d) => this.run(d));
      done();
      return;
    }
    if (r.end === 'error') {
      this.finish(done, failure(r, (s) => (s === 'splice_in' ? 'other' : s === 'splice_out' ? 'peer' : 'pump'), (side) => (side === 'other' ? 'splice_in' : 'splice_out')));
      return;
    }
    this.finish(done, { end: r.end === 'eof' ? 'eof' : 'stopped' });
  }

  private finish(done: Done, o: SpliceOutcome): void {
    this.finished = true;
    this.pump?.close();
    this.pump = null;
    countFailure(this.host.events, o);
    done();
    this.onEnd(o);
  }
}

/** This connection's kTLS RX → another socket. */
export class RxLend {
  private pump: SplicePump | null = null;
  private running = false;
  private stopping = false;
  private finished = false;
  /** Runs in a row that moved nothing and found nothing to read (see afterRecord). */
  private emptyEnds = 0;

  constructor(
    private readonly host: RxLendHost,
    private readonly make: SplicePumpFactory,
    private readonly toFd: number,
    /**
     * Deliver to the other socket whatever the stream decrypted in JS and
     * has not delivered yet; `cb` once it was written there. Runs before the
     * first run, and again after a record read in JS turned out to be data.
     */
    private readonly flush: (cb: () => void) => void,
    private readonly onEnd: (o: SpliceOutcome) => void,
  ) {}

  get active(): boolean {
    return !this.finished;
  }

  live(): number {
    return this.running && this.pump ? this.pump.moved() : 0;
  }

  /** Flush, then the first run. */
  begin(): void {
    this.flush(() => this.next());
  }

  stop(): void {
    if (this.finished || this.stopping) return;
    this.stopping = true;
    if (this.running) this.pump?.stop();
    // Not running: a flush is under way; next() ends the lend.
  }

  close(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.running && this.pump) this.host.spliced(this.pump.moved());
    this.running = false;
    this.pump?.close();
    this.pump = null;
  }

  private next(): void {
    if (this.finished) return;
    if (this.stopping) return this.finish({ end: 'stopped' });
    if (!this.host.rxLive()) return this.finish({ end: 'eof' });
    try {
      this.pump ??= this.make(this.host.fd, this.toFd, (r) => this.onRun(r));
      this.running = true;
      this.pump.start(0);
    } catch (err) {
      this.running = false;
      this.finish({ end: 'failed', side: 'pump', error: classifyKtlsError(err, 'splice_in'), cause: err });
    }
  }

  private onRun(r: SpliceResult): void {
    if (this.finished || !this.running) return;
    this.running = false;
    this.host.spliced(r.bytes);
    if (r.bytes > 0) this.emptyEnds = 0;
    if (r.end === 'stopped' || r.end === 'budget') return this.finish({ end: 'stopped' });
    if (r.end === 'error') {
      const o = failure(r, (s) => (s === 'splice_in' ? 'peer' : s === 'splice_out' ? 'other' : 'pump'), (side) => (side === 'other' ? 'splice_out' : 'splice_in'));
      // The kernel keeps a non-data record queued for recvmsg: read it, go on.
      if (o.end === 'failed' && o.side === 'peer' && o.error.kind === 'control_record') return this.afterRecord(true);
      return this.finish(o);
    }
    // 'eof': splice(2) read 0 bytes. A FIN, or an empty application data
    // record (legal in TLS): reading one record tells which.
    this.afterRecord(false);
  }

  /** After a run that stopped at a record (`control`) or read nothing: that record, through the stream. */
  private afterRecord(control: boolean): void {
    if (this.stopping) return this.finish({ end: 'stopped' });
    const r = this.host.readOne();
    if (this.finished) return;
    switch (r) {
      case 'more':
        this.emptyEnds = 0;
        return this.next();
      case 'again':
        // Nothing to read where the kernel said a record waits, or splice
        // and recvmsg disagree about EOF again and again: never spin on it.
        if (control || ++this.emptyEnds > 8) {
          const error: KtlsErrorClass = { errno: 'EAGAIN', kind: 'other', stage: 'splice_in' };
          return this.finish({ end: 'failed', side: 'peer', error, cause: new Error('kernel TLS splice stopped at a record that recvmsg cannot read') });
        }
        return this.next();
      case 'ended':
        return this.finish({ end: 'eof' });
      case 'data':
        // Decrypted in JS and pushed to the stream's reader: deliver it first.
        this.emptyEnds = 0;
        return this.begin();
    }
  }

  private finish(o: SpliceOutcome): void {
    this.finished = true;
    this.pump?.close();
    this.pump = null;
    countFailure(this.host.events, o);
    if (o.end === 'stopped' && this.host.rxLive()) this.host.rxReturned();
    this.onEnd(o);
  }
}

const kBeforeClose = Symbol('ktls-sidecar.beforeClose');
type Hooked = net.Socket & { [kBeforeClose]?: Array<() => void> };

/**
 * Run `fn` right before `socket`'s fd is closed, whoever destroys the socket
 * (our code, or Node itself after a read or write error). A pump splices
 * between fd numbers: one still registered after its socket closed would
 * read or write whatever file reuses the number. net.Socket closes its
 * handle in _destroy(), synchronously, and destroy() calls _destroy()
 * synchronously: the hook runs first, on the instance only.
 */
export function closeBeforeSocket(socket: net.Socket, fn: () => void): void {
  const s = socket as Hooked;
  let hooks = s[kBeforeClose];
  if (!hooks) {
    const list: Array<() => void> = [];
    hooks = list;
    s[kBeforeClose] = list;
    const original = s._destroy.bind(s);
    s._destroy = (err: Error | null, cb: (err?: Error | null) => void): void => {
      for (const f of list.splice(0)) f();
      original(err, cb);
    };
  }
  hooks.push(fn);
}
