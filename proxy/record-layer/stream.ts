// RecordLayerStream: the plaintext stream the fronts get for a connection
// whose record layer was handed off (proxy/handshake) — the fronts' socket
// itself (a PlaintextSocket: net.Socket surface, byte counts), so a request
// chunk crosses one JS stream on its way to node:http. Each direction lives
// either in the kernel (kTLS: kernel.ts) or in JS over the raw socket
// (js-sides.ts); both in JS is the userspace record layer
// (`record_layer: js`). This module is only the plumbing: TX operations in
// order (data writes and control records leave in the order they were
// queued), RX backpressure, end/destroy, and lending a kernel direction to
// a splice pump (splice.ts). What a control record means is control.ts's
// business.

import type net from 'node:net';
import type { KtlsNative } from '../../native/index.js';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { PLAINTEXT_BUFFER, PlaintextSocket } from '../plaintext-socket.js';
import type { TcpOptions } from '../plaintext-socket.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { readsStopped } from '../handshake/read-control.js';
import type { RxEvent } from '../tls/records.js';
import { ControlRecords } from './control.js';
import type { ControlOptions, TxOp } from './control.js';
import { JsRx, JsTx } from './js-sides.js';
import { KernelRx, KernelTx } from './kernel.js';
import type { KernelSocket } from './kernel.js';
import type { Done, RecordLayerEvents, RecordLayerStats, RxPath, RxSide, RxSink, TxPath, TxSide } from './paths.js';
import { splicePumpsOf } from './splice.js';
import type { SpliceOutcome } from './splice.js';
import { StreamSplices } from './splices.js';

export interface RecordLayerStreamOptions extends ControlOptions {
  raw: net.Socket;
  /** The raw socket's fd (needed when either side is in the kernel). */
  fd: number;
  /** Required when either side is in the kernel. */
  native: KtlsNative | null;
  version: TlsVersion;
  cipher: KernelCipher;
  tx: TxSide;
  rx: RxSide;
  /** Events already decrypted in userspace before the stream existed (the leftover), in order. */
  initialEvents?: RxEvent[];
  /** The client's FIN arrived before the handoff. */
  peerEnded?: boolean;
  /** The kernel can take a second TLS_TX/TLS_RX (probe): TLS 1.3 KeyUpdate can be followed. */
  rekeySupported: boolean;
  events?: RecordLayerEvents;
  /** Same meaning as for net.Socket; default false like a TLSSocket (EOF ends our side too). */
  allowHalfOpen?: boolean;
  /** Longest wait for room in the socket buffer when sending a control record (default 5000 ms). */
  controlSendTimeoutMs?: number;
  /** `ktls.splice`: a kernel direction may be lent to the addon's splice pump (default false). */
  splice?: boolean;
  /**
   * The probe's rxWholeRecordPoll: poll() reports kernel RX readable only
   * once a whole record is there, so a wakeup may end at a short read (KernelRx).
   */
  rxWholeRecordPoll?: boolean;
}

export class RecordLayerStream extends PlaintextSocket {
  readonly version: TlsVersion;
  readonly cipher: KernelCipher;
  private readonly raw: net.Socket;
  private readonly tx: TxPath;
  private readonly rx: RxPath;
  private readonly control: ControlRecords;
  /** Push more: false after push() returned false, until _read(). */
  private rxWanted = true;
  private rxEnded = false;
  private started = false;
  private txBusy = false;
  private readonly txWaiting: TxOp[] = [];
  /** Plaintext bytes pushed to the reader, by where they were decrypted (spliced ones: this.splices). */
  private rxBytesKernel = 0;
  private rxBytesUserspace = 0;
  /** Lending kernel directions to the splice pump: when `splice` is on and the addon has one. */
  private readonly splices: StreamSplices | null = null;

  constructor(opts: RecordLayerStreamOptions) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false, readableHighWaterMark: PLAINTEXT_BUFFER, writableHighWaterMark: PLAINTEXT_BUFFER });
    this.raw = opts.raw;
    this.version = opts.version;
    this.cipher = opts.cipher;
    const events = opts.events ?? {};
    let kernel: KernelSocket | null = null;
    if (opts.tx.side === 'kernel' || opts.rx.side === 'kernel') {
      if (!opts.native) throw new TypeError('RecordLayerStream: a kernel side needs the native addon');
      kernel = { raw: opts.raw, fd: opts.fd, native: opts.native, events };
    }
    const sink: RxSink = {
      live: () => this.rxLive,
      // Nothing is read while RX is lent to a pump.
      wanted: () => this.rxWanted && this.rxLive && !this.rxLent,
      event: (ev, where, rekeyed) => this.control.onRxEvent(ev, where, rekeyed),
      peerFin: () => {
        if (!this.rxEnded) this.control.onPeerFin();
      },
      destroy: (err) => this.destroy(err),
    };
    this.tx = opts.tx.side === 'kernel'
      ? new KernelTx(kernel!, opts.tx.keys, opts.rekeySupported, opts.controlSendTimeoutMs ?? 5000, () => this.destroyed)
      : new JsTx(opts.raw, opts.tx.protection);
    this.rx = opts.rx.side === 'kernel'
      ? new KernelRx(kernel!, opts.rx.keys, opts.rekeySupported, opts.version === 'TLSv1.3', sink, opts.rxWholeRecordPoll ?? false)
      // With TX in the kernel, libuv's reads were stopped at the hand-off: read the fd through the addon.
      : new JsRx(opts.raw, opts.rx.reader, sink, kernel && readsStopped(opts.raw) ? kernel : null);
    this.control = new ControlRecords({
      version: opts.version,
      tx: this.tx,
      rx: this.rx,
      events,
      isDestroyed: () => this.destroyed,
      runTx: (op) => this.runTx(op),
      pushData: (data, where) => this.pushData(data, where),
      endRx: () => this.endRx(),
      stopRx: () => this.stopRx(),
      endRaw: (cb) => this.raw.end(cb),
      destroy: (err) => this.destroy(err),
    }, opts);

    const pumps = kernel && opts.splice ? splicePumpsOf(kernel.native) : null;
    if (kernel && pumps) {
      this.splices = new StreamSplices(kernel, pumps, {
        runTx: (op) => this.runTx(op),
        txClosed: () => this.control.txClosed || this.destroyed,
        afterSplice: () => this.control.afterSplice(),
        rxLive: () => this.rxLive,
        readOne: () => (this.rx as KernelRx).readOne(),
        pauseRx: () => this.rx.pause(),
        resumeRx: () => {
          if (this.rxWanted) this.rx.resume();
        },
        drainReadable: () => {
          while (this.read() !== null);
        },
        writableLength: () => this.writableLength,
      });
    }

    // We decide when the raw socket's write side ends (after our close_notify),
    // not net.Socket's automatic end-on-EOF.
    this.raw.allowHalfOpen = true;
    this.raw.on('error', (err) => this.destroy(err));
    this.raw.on('close', () => {
      if (!this.destroyed) this.destroy();
    });

    // Start on the next tick so the owner can attach listeners first.
    process.nextTick(() => this.start(opts.initialEvents ?? [], opts.peerEnded ?? false));
  }

  /** Counters for the close log line (kernel record counts are refreshed while the socket is open). */
  stats(): Readonly<RecordLayerStats> {
    if (!this.destroyed) this.refreshRecordCounts();
    const { tx, rx } = this;
    return {
      tx: tx.where,
      rx: rx.where,
      rxBytesKernel: this.rxBytesKernel + this.splicedIn,
      rxBytesUserspace: this.rxBytesUserspace,
      txBytesKernel: tx.where === 'kernel' ? tx.bytes + this.splicedOut : 0,
      txBytesUserspace: tx.where === 'js' ? tx.bytes : 0,
      rxRecordsUserspace: rx.where === 'js' ? rx.records : 0,
      rxRecordsKernel: rx.where === 'kernel' ? rx.records : 0,
      txRecordsUserspace: tx.where === 'js' ? tx.records : 0,
      txRecordsKernel: tx.where === 'kernel' ? tx.records : 0,
      rxBytesSpliced: this.splicedIn,
      txBytesSpliced: this.splicedOut,
      ...this.control.counters,
    };
  }

  /** Plaintext bytes received from the peer, live: read by JS and spliced. */
  get bytesIn(): number {
    return this.rxBytesKernel + this.rxBytesUserspace + this.splicedIn;
  }

  /** Plaintext bytes sent to the peer, live: written by JS (once their turn came) and spliced. */
  get bytesOut(): number {
    return this.tx.bytes + this.splicedOut;
  }

  protected tcp(): TcpOptions {
    return this.raw;
  }

  /**
   * Our own TLS 1.3 KeyUpdate now, queued behind what is already written
   * (the key usage limit does the same on its own); `requestPeer` asks the
   * peer to update its sending key too.
   */
  keyUpdate(requestPeer = false): void {
    if (this.version !== 'TLSv1.3') throw new SidecarError(ErrorCodes.KTLS_CONTROL, 'KeyUpdate exists only in TLS 1.3');
    this.control.sendKeyUpdate(requestPeer, 'rekey_unsupported');
  }

  // ---------------------------------------------------------------- RX --

  private get rxLive(): boolean {
    return !this.rxEnded && !this.destroyed;
  }

  private start(initial: RxEvent[], peerEnded: boolean): void {
    if (this.destroyed) return;
    this.started = true;
    // The leftover was decrypted (and any KeyUpdate in it followed) before the stream existed.
    for (const ev of initial) {
      if (!this.control.onRxEvent(ev, 'userspace', true)) return;
    }
    if (this.rxEnded) return;
    this.rx.start(peerEnded);
  }

  override _read(): void {
    if (this.rxWanted || !this.started) {
      this.rxWanted = true;
      return;
    }
    this.rxWanted = true;
    if (this.rxLive && !this.rxLent) this.rx.resume();
  }

  private pushData(data: Buffer, where: 'kernel' | 'userspace'): void {
    if (where === 'kernel') this.rxBytesKernel += data.length;
    else this.rxBytesUserspace += data.length;
    this.touch();
    if (!this.push(data)) {
      this.rxWanted = false;
      this.rx.pause();
    }
  }

  private endRx(): void {
    if (this.rxEnded) return;
    this.stopRx();
    this.push(null);
  }

  private stopRx(): void {
    this.rxEnded = true;
    this.rx.stop();
  }

  // ---------------------------------------------------------------- TX --

  /** Serialise TX: data writes and control records leave in the order they were queued. */
  private runTx(op: TxOp): void {
    if (this.txBusy) {
      this.txWaiting.push(op);
      // A pump run holding the slot ends (flushed) so this goes out next.
      this.splices?.yieldTx();
      return;
    }
    this.txBusy = true;
    op(this.txDone);
  }

  /** The end of the operation holding the TX slot: one function for all of them, not a closure per write. */
  private readonly txDone: Done = (err) => {
    this.txBusy = false;
    if (err) {
      this.destroy(err);
      return;
    }
    const next = this.txWaiting.shift();
    if (next) this.runTx(next);
  };

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Done): void {
    this.touch();
    this.runTx((done) => this.txData([chunk], done, cb));
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Done): void {
    this.touch();
    this.runTx((done) => this.txData(chunks.map((c) => c.chunk), done, cb));
  }

  private txData(chunks: Buffer[], done: Done, cb: Done): void {
    if (this.control.txClosed) {
      const err = new SidecarError(ErrorCodes.KTLS_CONTROL, 'write after the TLS connection was closed');
      done(err);
      cb(err);
      return;
    }
    this.tx.writeData(chunks, (err) => {
      done(err);
      if (!err) this.control.afterDataWrite();
      cb(err);
      this.splices?.afterWrite();
    });
  }

  override _final(cb: Done): void {
    this.runTx((done) => {
      this.control.closeNotify((err) => {
        this.control.txClosed = true;
        if (err) {
          done(err);
          cb(err);
          return;
        }
        if (this.raw.writableEnded) {
          // A graceful end already said goodbye and sent FIN.
          done();
          cb();
          return;
        }
        this.raw.end(() => {
          done();
          cb();
        });
      });
    });
  }

  // ------------------------------------------------------------- splice --

  /** Plaintext bytes from the peer that a pump moved (live: the running run included). */
  get splicedIn(): number {
    return this.splices?.splicedIn ?? 0;
  }

  /** Plaintext bytes to the peer that a pump moved (live). */
  get splicedOut(): number {
    return this.splices?.splicedOut ?? 0;
  }

  private get rxLent(): boolean {
    return this.splices?.rxLent ?? false;
  }

  /**
   * Whether `dir` can be lent to a splice pump now: `splice` is on, the
   * addon has a pump, the kernel holds the direction, it is still open and
   * not lent already.
   */
  canSplice(dir: 'tx' | 'rx'): boolean {
    if (!this.splices || this.destroyed) return false;
    if (dir === 'tx') return this.tx.where === 'kernel' && !this.control.txClosed && !this.writableEnded && this.splices.canLend('tx');
    return this.rx.where === 'kernel' && this.started && this.rxLive && this.splices.canLend('rx');
  }

  /**
   * Lend TX: bytes read from `fromFd` go to the peer through the kernel's
   * TX, in TX order (after every write the stream accepted so far). The
   * owner writes nothing meanwhile; `onEnd` once TX is back (SpliceOutcome).
   * `limit`: exactly that many bytes (then `done`; the other socket's EOF
   * before them is its failure), else until that EOF.
   */
  spliceTx(fromFd: number, onEnd: (o: SpliceOutcome) => void, limit?: number): void {
    if (!this.canSplice('tx')) throw new SidecarError(ErrorCodes.KTLS_CONTROL, 'TX cannot be lent to a splice pump now');
    this.splices!.lendTx(fromFd, onEnd, limit);
  }

  /**
   * Lend RX: what the peer sends goes to `toFd` through the pump. The stream
   * stops reading at once; `flush` must first deliver to `toFd` whatever the
   * stream already gave its reader (the stream pushes its own buffer out
   * before calling it) and call back once that is written. Control records
   * are read and handled here between runs. `onEnd` once RX is back or over.
   */
  spliceRx(toFd: number, flush: (cb: () => void) => void, onEnd: (o: SpliceOutcome) => void): void {
    if (!this.canSplice('rx')) throw new SidecarError(ErrorCodes.KTLS_CONTROL, 'RX cannot be lent to a splice pump now');
    this.splices!.lendRx(toFd, flush, onEnd);
  }

  /** Take the lent directions back: each run ends with what it read delivered, then its onEnd('stopped'). */
  stopSplices(): void {
    this.splices?.stop();
  }

  /** Release every pump now, without callbacks (a socket is about to close). */
  closeSplices(): void {
    this.splices?.close();
  }

  // ----------------------------------------------------------- teardown --

  override _destroy(err: Error | null, cb: Done): void {
    // Pumps first: they splice by fd number, and the raw socket goes below.
    this.closeSplices();
    this.clearIdle();
    this.refreshRecordCounts();
    this.rxEnded = true;
    this.control.txClosed = true;
    this.rx.close();
    this.tx.wipe();
    this.raw.destroy();
    cb(err);
  }

  private refreshRecordCounts(): void {
    this.tx.refreshRecords?.();
    this.rx.refreshRecords?.();
  }
}
