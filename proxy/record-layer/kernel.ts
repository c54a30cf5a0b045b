// The directions in the kernel (kTLS).
//
// TX: the kernel makes ≤ 16 KiB records of plaintext writes. A write is one
// send(2) from the addon while libuv's write queue for the socket is empty
// (the usual case: a response fits the socket buffer); what the socket
// cannot take now goes to the raw net.Socket, and libuv waits for room
// (transparent to libuv, backpressure included — measured in the kernel
// lab). A control record (alert, KeyUpdate) is one sendmsg with
// TLS_SET_RECORD_TYPE. Both bypass libuv's queue only while the stream holds
// the TX slot, so every earlier write has completed and nothing overtakes.
//
// RX: libuv never reads the fd again (the engine stopped it). A native poller
// (the addon's epoll set, no extra fd) wakes us; recvmsg + TLS_GET_RECORD_TYPE
// reads one record type at a time into ONE buffer shared by every connection
// of this thread (rxScratch): each record is copied out before anything else
// runs, so an idle connection holds no receive buffer (it held 64 KiB of its
// own before). Never a plain read(): a control record on a plain read is EIO.
// Alerts and post-handshake messages become the same events the JS reader
// produces, for the control state machine.
//
// TLS 1.3 KeyUpdate (Documentation/networking/tls.rst, "TLS 1.3 Key Updates";
// Linux >= 6.14): after delivering a KeyUpdate record the kernel pauses RX —
// reads fail with EKEYEXPIRED and poll() reports nothing — until
// setsockopt(TLS_RX) provides the next key; TX never pauses, so our own
// KeyUpdate must be sent under the old key and TLS_TX set right after.
// Older kernels refuse a second TLS_TX/TLS_RX with EBUSY.

import type net from 'node:net';
import type { KtlsNative, NativeSyscallError, Poller } from '../../native/index.js';
import { wipeCryptoInfo } from '../../native/crypto-info.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { KtlsErrorClass } from '../ktls/errno.js';
import type { KtlsStage } from '../vocabulary.js';
import { ContentType, PostHandshakeParser } from '../tls/control.js';
import type { RecordProtection } from '../tls/record-protection.js';
import { recordEvents } from '../tls/records.js';
import { rawWrite } from './paths.js';
import type { Done, RecordLayerEvents, RxPath, RxSink, TxPath } from './paths.js';

const RX_BUFFER_SIZE = 64 * 1024;
let scratch: Buffer | null = null;

/**
 * The receive buffer every KernelRx (and every JsRx reading the fd itself)
 * of this thread reads into (module state: each worker thread has its own).
 * Safe to share: reads are synchronous, and a reader is done with what it
 * read before it hands anything on — KernelRx copies the record out and
 * zeroes the plaintext it used; JsRx opens every whole record into plaintext
 * of its own and copies only a trailing partial one (RecordReader.pushTransient)
 * — so no callback ever sees or reuses it mid-record.
 */
export function rxScratch(): Buffer {
  scratch ??= Buffer.alloc(RX_BUFFER_SIZE);
  return scratch;
}
/** Reads per poller wakeup before yielding (the poll is level-triggered, so nothing is lost). */
export const RX_BATCH = 32;
/** Chunks of one TX write up to this many bytes in all are copied into one buffer (writeData). */
const COALESCE_MAX_BYTES = 16 * 1024;

/** The raw socket of a connection with a direction in the kernel. */
export interface KernelSocket {
  raw: net.Socket;
  fd: number;
  native: KtlsNative;
  events: RecordLayerEvents;
}

/**
 * What both kernel directions keep: the records protected, from the kernel's
 * own sequence numbers across rekeys (the sequence restarts at 0 with each
 * key, so each key epoch is folded into the total before the next key goes
 * in), and for TLS 1.3 the JS protection whose traffic secret gives the next
 * key (null for TLS 1.2: no KeyUpdate, no key kept).
 */
abstract class KernelDirection {
  readonly where = 'kernel';
  private base: bigint;
  /** -1 once any epoch could not be read: a partial count would mislead. */
  records = 0;

  constructor(protected readonly k: KernelSocket, private readonly dir: 'tx' | 'rx', protected readonly keys: RecordProtection | null) {
    this.base = this.seq();
  }

  /** The kernel's next record sequence number, or -1n when it cannot be read. */
  seq(): bigint {
    if (this.k.raw.destroyed) return -1n;
    try {
      return this.k.native.getCryptoInfo(this.k.fd, this.dir).recSeq;
    } catch (err) {
      this.k.events.syscallError?.(classifyKtlsError(err, 'option'));
      return -1n;
    }
  }

  /** Fold the records of the current key epoch into the total. */
  refreshRecords(): void {
    const seq = this.seq();
    const unknown = seq < 0n || this.base < 0n || this.records < 0;
    this.records = unknown ? -1 : this.records + Number(seq - this.base);
    this.base = seq;
  }

  /** application_traffic_secret_N+1 into the kernel (sequence 0); the classified error when it refused. */
  protected rekeyKernel(): KtlsErrorClass | null {
    this.refreshRecords();
    this.keys!.keyUpdate();
    const info = this.keys!.toCryptoInfo();
    try {
      this.k.native.setCryptoInfo(this.k.fd, this.dir, info);
    } catch (err) {
      wipeCryptoInfo(info);
      const c = classifyKtlsError(err, this.dir === 'tx' ? 'rekey_tx' : 'rekey_rx');
      this.k.events.syscallError?.(c);
      return c;
    }
    this.base = 0n;
    return null;
  }
}

export class KernelTx extends KernelDirection implements TxPath {
  readonly canRekey: boolean;
  bytes = 0;

  constructor(
    k: KernelSocket,
    keys: RecordProtection | null,
    rekeySupported: boolean,
    /** Longest wait for room in the socket buffer when sending a control record. */
    private readonly controlSendTimeoutMs: number,
    /** The stream was destroyed: stop retrying. */
    private readonly gone: () => boolean,
  ) {
    super(k, 'tx', keys);
    this.canRekey = rekeySupported && keys !== null;
  }

  writeData(chunks: Buffer[], cb: Done): void {
    const raw = this.k.raw;
    let total = 0;
    for (const c of chunks) total += c.length;
    this.bytes += total;
    if (chunks.length === 1) return this.send(chunks[0]!, cb);
    // A small response's head and body as one buffer: one send, one record, as the writev made;
    // larger chunks are not copied.
    if (total <= COALESCE_MAX_BYTES) return this.send(Buffer.concat(chunks, total), cb);
    raw.cork();
    for (let i = 0; i < chunks.length - 1; i++) raw.write(chunks[i]!);
    rawWrite(raw, chunks[chunks.length - 1]!, cb);
    raw.uncork();
  }

  /**
   * One send(2) of `buf` straight into the kernel's TX while libuv holds
   * nothing queued for the socket: no libuv write request and no net.Socket
   * write bookkeeping per response, the same bytes and records. What the
   * kernel does not take now (socket buffer full: EAGAIN or a partial send)
   * goes through libuv, which waits for room; the TX slot keeps later writes
   * behind it. Control records bypass libuv the same way (sendRecord).
   */
  private send(buf: Buffer, cb: Done): void {
    const { raw, native, fd, events } = this.k;
    if (raw.writableLength > 0 || raw.destroyed || raw.writableEnded) return rawWrite(raw, buf, cb);
    let n: number;
    try {
      n = native.sendPlain(fd, buf);
    } catch (err) {
      const c = classifyKtlsError(err, 'write');
      events.syscallError?.(c);
      // A reset peer ends the connection as a failed libuv write would (the error's code says EPIPE / ECONNRESET).
      return cb(c.kind === 'closed' ? (err as Error) : new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS send failed: ${c.errno}`, { cause: err }));
    }
    if (n === buf.length) return cb();
    rawWrite(raw, n > 0 ? buf.subarray(n) : buf, cb);
  }

  /**
   * sendmsg with TLS_SET_RECORD_TYPE. EAGAIN (socket buffer full) is retried
   * with a short backoff; the native poller only watches readability, and
   * control records are rare.
   */
  sendRecord(type: number, data: Buffer, cb: Done): void {
    const { native, fd, events } = this.k;
    const deadline = performance.now() + this.controlSendTimeoutMs;
    let delay = 1;
    const attempt = (): void => {
      if (this.gone()) return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
      let n: number;
      try {
        n = native.sendRecord(fd, type, data);
      } catch (err) {
        const c = classifyKtlsError(err, 'write');
        events.syscallError?.(c);
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS control record send failed: ${c.errno}`, { cause: err }));
      }
      if (n === data.length) return cb();
      if (n >= 0) {
        // A control record is one record; a partial send would split it.
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS control record was sent partially'));
      }
      if (performance.now() >= deadline) {
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS control record: socket buffer stayed full'));
      }
      setTimeout(attempt, delay);
      delay = Math.min(delay * 2, 100);
    };
    attempt();
  }

  rekey(): Error | null {
    const c = this.rekeyKernel();
    return c && new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS TX rekey failed: ${c.errno}`);
  }

  keyUsage(): bigint {
    return this.seq();
  }

  wipe(): void {
    this.keys?.wipe();
  }
}

export class KernelRx extends KernelDirection implements RxPath {
  private readonly parser: PostHandshakeParser;
  private poller: Poller | null = null;
  private started = false;
  /** The last readOne() that delivered data read less than the buffer holds: nothing more of that type was queued. */
  private shortRead = false;

  constructor(
    k: KernelSocket,
    keys: RecordProtection | null,
    private readonly rekeySupported: boolean,
    tls13: boolean,
    private readonly sink: RxSink,
    /** The probe's rxWholeRecordPoll: a wakeup may end at a short read (onReadable). */
    private readonly wholeRecordPoll = false,
  ) {
    super(k, 'rx', keys);
    this.parser = new PostHandshakeParser(tls13);
  }

  start(peerEnded: boolean): void {
    if (peerEnded) {
      // Nothing can follow the client's FIN; the kernel has nothing to read.
      this.sink.peerFin();
      return;
    }
    this.started = true;
    try {
      this.poller = this.k.native.createPoller(this.k.fd, (err) => this.onReadable(err));
    } catch (err) {
      this.syscallFailed(err, 'poll');
      return;
    }
    if (this.sink.wanted()) this.poller.start();
  }

  pause(): void {
    this.poller?.stop();
  }

  resume(): void {
    this.poller?.start();
  }

  stop(): void {
    this.poller?.stop();
  }

  rekey(): 'ok' | 'unsupported' | 'failed' {
    // Without it the kernel would decrypt the next record with the old key.
    if (!this.rekeySupported || !this.keys) return 'unsupported';
    const c = this.rekeyKernel();
    if (!c) return 'ok';
    return c.kind === 'busy' || c.kind === 'unsupported' ? 'unsupported' : 'failed';
  }

  close(): void {
    if (this.poller) {
      this.poller.close();
      this.poller = null;
    }
    this.keys?.wipe();
  }

  /**
   * True when the socket was read until EAGAIN: the poller then waits for a
   * new event (edge). Linux 6.1 keeps a kTLS RX socket readable while only part
   * of a record has arrived; a level-triggered wait would call us in a loop
   * until the rest comes (a slow or hostile client would keep a core busy).
   * Where poll() waits for whole records (probe rxWholeRecordPoll, 7.x), a
   * short data read ends the wakeup instead, and the poll stays level-triggered:
   * a record already queued behind it (kTLS stops a read at a change of record
   * type: a control record, or EOF) keeps the socket readable and calls us
   * again, and a record still arriving does not. That saves the recvmsg that
   * only says EAGAIN: one per small request.
   */
  private onReadable(err: NativeSyscallError | null): boolean {
    if (!this.sink.live()) return false;
    if (err) {
      this.syscallFailed(err, 'poll');
      return false;
    }
    for (let i = 0; i < RX_BATCH && this.sink.wanted(); i++) {
      const r = this.readOne();
      if (r === 'again') return true;
      if (r === 'ended') return false;
      if (r === 'data' && this.shortRead && this.wholeRecordPoll) return false;
    }
    return false;
  }

  /**
   * Read one record and hand it on: data to the stream, anything else to the
   * control state machine. Also how a splice pump that stopped before a
   * non-data record (or read 0 bytes) gets that record read (splice.ts).
   * 'again': nothing to read; 'ended': RX is over (EOF, close_notify, fatal,
   * failure); 'data': application data was delivered; 'more': a record was
   * handled and RX goes on.
   */
  readOne(): 'more' | 'ended' | 'again' | 'data' {
    if (!this.sink.live() || !this.started) return 'ended';
    const buf = rxScratch();
    let r;
    try {
      r = this.k.native.recvRecord(this.k.fd, buf);
    } catch (e) {
      this.onRecvError(e);
      return this.sink.live() ? 'again' : 'ended';
    }
    if (r === null) return 'again';
    if (r.eof) {
      this.sink.peerFin();
      return 'ended';
    }
    // The buffer is shared: the record's own copy first, and no plaintext left behind in it.
    const record = Buffer.allocUnsafe(r.bytes);
    buf.copy(record, 0, 0, r.bytes);
    buf.fill(0, 0, r.bytes);
    if (r.type === ContentType.APPLICATION_DATA) {
      // An empty record (legal in TLS) carries nothing.
      if (r.bytes === 0) return 'more';
      this.shortRead = r.bytes < buf.length;
      this.sink.event({ kind: 'data', data: record }, 'kernel', false);
      return 'data';
    }
    for (const e of recordEvents(r.type, record, this.parser)) {
      if (!this.sink.event(e, 'kernel', false)) return 'ended';
    }
    return this.sink.live() ? 'more' : 'ended';
  }

  private onRecvError(err: unknown): void {
    const info = classifyKtlsError(err, 'read');
    this.k.events.syscallError?.(info);
    switch (info.kind) {
      case 'would_block':
        return;
      case 'decrypt_error':
        this.k.events.decryptError?.('kernel');
        this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS: a record failed authentication (EBADMSG)'));
        return;
      case 'closed':
        this.sink.destroy();
        return;
      default:
        // EKEYEXPIRED here means a KeyUpdate was consumed without a rekey: a bug, never a half state.
        this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS receive failed: ${info.errno}`, { cause: err }));
    }
  }

  private syscallFailed(err: unknown, stage: KtlsStage): void {
    const info = classifyKtlsError(err, stage);
    this.k.events.syscallError?.(info);
    this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS ${stage} failed: ${info.errno}`, { cause: err }));
  }
}
