// KernelTlsStream: the plaintext Duplex the fronts see for a connection whose
// record layer was handed off (proxy/handshake). Each direction lives either
// in the kernel (kTLS) or in JS (RecordProtection over the raw socket):
//
//   TX kernel: plaintext writes go to the raw net.Socket through libuv; the
//     kernel encrypts (transparent to libuv, backpressure included — measured
//     in the kernel lab). Control records (alerts, KeyUpdate) go through
//     sendmsg + TLS_SET_RECORD_TYPE, ordered behind in-flight writes.
//   RX kernel: libuv never reads the fd again (the engine stopped it). A
//     native poller on a dup of the fd wakes us; recvmsg + TLS_GET_RECORD_TYPE
//     reads one record type at a time into a reusable buffer. Never a plain
//     read(): a control record on a plain read is EIO.
//   RX/TX JS: ciphertext from/to the raw socket, protected by RecordProtection.
//     Used for RX in `tx` mode, and for both when the install failed before any
//     key reached the kernel (the connection survives in userspace).
//
// Control records are handled here, the same way for both RX sides:
// close_notify → EOF (and ours on end()), fatal alerts → destroy, TLS 1.3
// KeyUpdate → next RX key (kernel: setsockopt(TLS_RX) again), and if the peer
// asked, our KeyUpdate then the next TX key; rate-limited per connection. A
// kernel that cannot rekey ends the connection gracefully.

import { Duplex } from 'node:stream';
import type net from 'node:net';
import type { KtlsNative, NativeSyscallError, Poller } from '../../native/index.js';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { wipeCryptoInfo } from '../../native/crypto-info.js';
import { MAX_PLAINTEXT } from '../tls/record-protection.js';
import type { RecordProtection } from '../tls/record-protection.js';
import { AlertDescription, AlertLevel, ContentType, buildAlert, buildKeyUpdate, parseAlert } from '../tls/control.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { resumeReading } from '../handshake/read-control.js';
import { classifyKtlsError } from './errno.js';
import type { KtlsErrorClass, KtlsStage } from './errno.js';
import { KeyUpdateRateLimiter, PostHandshakeParser } from './keyupdate.js';
import type { TrafficSecretChain } from './keyupdate.js';
import type { PostHandshakeEvent } from './keyupdate.js';

/** What a record layer direction's events report to metrics/logs (wired by the pipeline). */
export interface KtlsConnectionEvents {
  /** Every failed syscall, already classified (errno name + kind + stage). */
  syscallError?(info: KtlsErrorClass): void;
  /** A record failed authentication (kernel EBADMSG or JS open failure). */
  decryptError?(where: 'kernel' | 'userspace'): void;
  /** One KeyUpdate step: RX = the peer's, TX = ours. */
  keyUpdate?(direction: 'rx' | 'tx', result: 'ok' | 'rate_limited' | 'unsupported' | 'failed'): void;
  /** An alert from the peer other than close_notify. */
  peerAlert?(level: number, description: number): void;
  /** A TLS 1.2 ClientHello after the handshake (client renegotiation), refused; `fatal` from the second on. */
  renegotiationRefused?(fatal: boolean): void;
}

/** One event from the RX side, in order. */
export type RxEvent =
  | { kind: 'data'; data: Buffer }
  | { kind: 'alert'; level: number; description: number }
  | PostHandshakeEvent;

const RECORD_HEADER = 5;
/** TLS 1.2 allows 2^14 + 2048 bytes of ciphertext; TLS 1.3 2^14 + 256. */
const MAX_CIPHERTEXT = 16384 + 2048;

/**
 * The JS RX record layer: frames ciphertext into records, opens them, and
 * turns them into events. A TLS 1.3 KeyUpdate moves `rx` to the next key
 * before the next record is opened (records after it use the new key).
 * Used for RX in `tx` mode, for the leftover before a kernel RX install,
 * and for the userspace fallback.
 */
export class JsRecordReader {
  readonly rx: RecordProtection;
  private buf: Buffer = Buffer.alloc(0);
  private readonly queue: RxEvent[] = [];
  private readonly parser: PostHandshakeParser;
  private failed = false;
  records = 0;
  plaintextBytes = 0;

  constructor(rx: RecordProtection) {
    this.rx = rx;
    this.parser = new PostHandshakeParser(rx.version === 'TLSv1.3');
  }

  push(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, bytes]) : bytes;
  }

  /** Buffered ciphertext not yet consumed. */
  get buffered(): number {
    return this.buf.length;
  }

  /**
   * Bytes still needed to complete the record at the head of the buffer: 0 at
   * a record boundary (or when a whole record is buffered). With fewer than 5
   * header bytes, the bytes that complete the header (the length is unknown).
   */
  missingBytes(): number {
    if (this.buf.length === 0) return 0;
    if (this.buf.length < RECORD_HEADER) return RECORD_HEADER - this.buf.length;
    const need = RECORD_HEADER + this.buf.readUInt16BE(3);
    return need > this.buf.length ? need - this.buf.length : 0;
  }

  /** The next event, or null when more ciphertext is needed. After a `fatal` event, always null. */
  next(): RxEvent | null {
    for (;;) {
      const queued = this.queue.shift();
      if (queued) return queued;
      if (this.failed || this.buf.length < RECORD_HEADER) return null;
      const type = this.buf[0] ?? 0;
      const len = this.buf.readUInt16BE(3);
      if (len > MAX_CIPHERTEXT) return this.fail(AlertDescription.RECORD_OVERFLOW, 'record over the maximum size');
      if (this.buf.length < RECORD_HEADER + len) return null;
      const header = this.buf.subarray(0, RECORD_HEADER);
      const payload = this.buf.subarray(RECORD_HEADER, RECORD_HEADER + len);
      this.buf = this.buf.subarray(RECORD_HEADER + len);
      if (this.rx.version === 'TLSv1.3' && type !== ContentType.APPLICATION_DATA) {
        // After the handshake everything is protected: a plaintext record is a violation.
        return this.fail(AlertDescription.UNEXPECTED_MESSAGE, `unprotected record type ${type}`);
      }
      const opened = this.rx.open(header, payload);
      if (!opened) return this.fail(AlertDescription.BAD_RECORD_MAC, 'record failed authentication', true);
      this.records++;
      if (opened.type === ContentType.APPLICATION_DATA) {
        if (opened.data.length === 0) continue; // legal, carries nothing
        this.plaintextBytes += opened.data.length;
        return { kind: 'data', data: opened.data };
      }
      if (opened.type === ContentType.ALERT) {
        const alert = parseAlert(opened.data);
        if (!alert) return this.fail(AlertDescription.DECODE_ERROR, 'malformed alert');
        return { kind: 'alert', level: alert.level, description: alert.description };
      }
      if (opened.type === ContentType.HANDSHAKE) {
        for (const ev of this.parser.push(opened.data)) {
          if (ev.kind === 'key_update') this.rx.keyUpdate(); // before the next record is opened
          this.queue.push(ev);
          if (ev.kind === 'fatal') {
            this.failed = true;
            break;
          }
        }
        continue;
      }
      return this.fail(AlertDescription.UNEXPECTED_MESSAGE, `record type ${opened.type} after the handshake`);
    }
  }

  private fail(alert: number, why: string, decryptError = false): RxEvent {
    this.failed = true;
    this.buf = Buffer.alloc(0);
    return { kind: 'fatal', alert, why: decryptError ? `decrypt_error: ${why}` : why };
  }
}

export type TxSide =
  /** The kernel holds TX; for TLS 1.3 we keep the traffic secret chain for KeyUpdate (null for 1.2). */
  | { side: 'kernel'; secrets: TrafficSecretChain | null }
  | { side: 'js'; protection: RecordProtection };

export type RxSide =
  | { side: 'kernel'; secrets: TrafficSecretChain | null }
  /** `reader` already holds the leftover ciphertext; the stream keeps feeding it from the raw socket. */
  | { side: 'js'; reader: JsRecordReader };

export interface KernelTlsStreamOptions {
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
  /** `ktls.keyUpdateRateLimit`: most peer KeyUpdates per minute. */
  keyUpdateRateLimit: number;
  events?: KtlsConnectionEvents;
  /** Same meaning as for net.Socket; default false like a TLSSocket (EOF ends our side too). */
  allowHalfOpen?: boolean;
  /** Clock for the KeyUpdate rate limit (tests). */
  now?: () => number;
  /** Longest wait for room in the socket buffer when sending a control record (default 5000 ms). */
  controlSendTimeoutMs?: number;
  /**
   * TLS 1.3: records under one TX key before we send our own KeyUpdate
   * (RFC 8446 5.5: AES-GCM ≈ 2^24.5; default 2^24). Checked every
   * `keyUsageCheckWrites` writes (default 1024; the kernel's sequence number
   * is read back with getsockopt) — so the limit can be overshot by what
   * those writes hold.
   */
  txKeyRecordLimit?: bigint;
  keyUsageCheckWrites?: number;
}

/** Counters for the connection's close log line. */
export interface KtlsStreamStats {
  tx: 'kernel' | 'js';
  rx: 'kernel' | 'js';
  /** Plaintext bytes by where they were (de)crypted. */
  rxBytesKernel: number;
  rxBytesUserspace: number;
  txBytesKernel: number;
  txBytesUserspace: number;
  /** Records: exact in JS; kernel counts come from the kernel's sequence numbers (-1 when unreadable). */
  rxRecordsUserspace: number;
  rxRecordsKernel: number;
  txRecordsUserspace: number;
  txRecordsKernel: number;
  keyUpdatesIn: number;
  keyUpdatesOut: number;
  closeNotifyIn: boolean;
  closeNotifyOut: boolean;
  /** The peer sent FIN without close_notify. */
  truncated: boolean;
  alertsIn: number;
  /** TLS 1.2 client renegotiations refused (ClientHellos after the handshake). */
  renegotiationsRefused: number;
  /** Why we ended the connection ourselves, if we did (e.g. rekey_unsupported, key_update_limit). */
  endReason: string | null;
}

const RX_BUFFER_SIZE = 64 * 1024;
/** Records read per poller wakeup before yielding (the poll is level-triggered, so nothing is lost). */
const RX_BATCH = 32;

type TxOp = (done: (err?: Error | null) => void) => void;

export class KernelTlsStream extends Duplex {
  private readonly raw: net.Socket;
  private readonly fd: number;
  private readonly native: KtlsNative | null;
  readonly version: TlsVersion;
  readonly cipher: KernelCipher;
  private readonly txSide: TxSide;
  private readonly rxSide: RxSide;
  private readonly events: KtlsConnectionEvents;
  private readonly rekeySupported: boolean;
  private readonly limiter: KeyUpdateRateLimiter;
  private readonly controlSendTimeoutMs: number;
  private readonly parser: PostHandshakeParser;
  private readonly txKeyRecordLimit: bigint;
  private readonly keyUsageCheckWrites: number;
  private writesSinceKeyCheck = 0;
  private txRotationQueued = false;

  private poller: Poller | null = null;
  private rxBuf: Buffer | null = null;
  /** Push more: false after push() returned false, until _read(). */
  private rxWanted = true;
  private rxEnded = false;
  /** JS RX: the peer's FIN arrived; the EOF follows once the reader is drained. */
  private peerFinSeen = false;
  private started = false;
  private txBusy = false;
  private readonly txWaiting: TxOp[] = [];
  /** No more TX once set (close_notify sent or fatal). */
  private txClosed = false;
  /** Kernel sequence numbers at the start of the current key epoch, for record counts. */
  private txSeqBase = 0n;
  private rxSeqBase = 0n;
  private readonly s: KtlsStreamStats;

  constructor(opts: KernelTlsStreamOptions) {
    super({ allowHalfOpen: opts.allowHalfOpen ?? false });
    this.raw = opts.raw;
    this.fd = opts.fd;
    this.native = opts.native;
    this.version = opts.version;
    this.cipher = opts.cipher;
    this.txSide = opts.tx;
    this.rxSide = opts.rx;
    this.events = opts.events ?? {};
    this.rekeySupported = opts.rekeySupported;
    this.limiter = new KeyUpdateRateLimiter(opts.keyUpdateRateLimit, opts.now);
    this.controlSendTimeoutMs = opts.controlSendTimeoutMs ?? 5000;
    this.parser = new PostHandshakeParser(opts.version === 'TLSv1.3');
    this.txKeyRecordLimit = opts.txKeyRecordLimit ?? 1n << 24n;
    this.keyUsageCheckWrites = Math.max(1, opts.keyUsageCheckWrites ?? 1024);
    if ((opts.tx.side === 'kernel' || opts.rx.side === 'kernel') && !opts.native) {
      throw new TypeError('KernelTlsStream: a kernel side needs the native addon');
    }
    this.s = {
      tx: opts.tx.side,
      rx: opts.rx.side,
      rxBytesKernel: 0,
      rxBytesUserspace: 0,
      txBytesKernel: 0,
      txBytesUserspace: 0,
      rxRecordsUserspace: 0,
      rxRecordsKernel: 0,
      txRecordsUserspace: 0,
      txRecordsKernel: 0,
      keyUpdatesIn: 0,
      keyUpdatesOut: 0,
      closeNotifyIn: false,
      closeNotifyOut: false,
      truncated: false,
      alertsIn: 0,
      renegotiationsRefused: 0,
      endReason: null,
    };
    if (opts.tx.side === 'kernel') this.txSeqBase = this.kernelSeq('tx');
    if (opts.rx.side === 'kernel') this.rxSeqBase = this.kernelSeq('rx');

    // We decide when the raw socket's write side ends (after our close_notify),
    // not net.Socket's automatic end-on-EOF.
    this.raw.allowHalfOpen = true;
    this.raw.on('error', (err) => this.destroy(err));
    this.raw.on('close', () => {
      if (!this.destroyed) this.destroy();
    });

    const initial = opts.initialEvents ?? [];
    const peerEnded = opts.peerEnded ?? false;
    // Start on the next tick so the owner can attach listeners first.
    process.nextTick(() => this.start(initial, peerEnded));
  }

  /** Counters for the close log line (kernel record counts are refreshed while the socket is open). */
  stats(): Readonly<KtlsStreamStats> {
    if (!this.destroyed) this.refreshKernelRecordCounts();
    return { ...this.s };
  }

  // ---------------------------------------------------------------- RX --

  private start(initial: RxEvent[], peerEnded: boolean): void {
    if (this.destroyed) return;
    this.started = true;
    for (const ev of initial) {
      if (!this.onRxEvent(ev, 'userspace', true)) return;
    }
    if (this.rxEnded) return;
    if (this.rxSide.side === 'js') {
      const reader = this.rxSide.reader;
      this.s.rxRecordsUserspace = reader.records;
      this.pumpJs();
      if (this.rxEnded || this.destroyed) return;
      if (peerEnded) {
        this.onPeerFin();
        return;
      }
      this.raw.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        this.pumpJs();
      });
      this.raw.on('end', () => this.onPeerFin());
      resumeReading(this.raw);
      // The owner is not reading yet (the leftover filled its buffer): keep
      // the socket's backpressure until _read(), not an unbounded reader.
      if (!this.rxWanted) this.raw.pause();
    } else {
      if (peerEnded) {
        // Nothing can follow the client's FIN; the kernel has nothing to read.
        this.onPeerFin();
        return;
      }
      this.rxBuf = Buffer.allocUnsafe(RX_BUFFER_SIZE);
      try {
        this.poller = this.native!.createPoller(this.fd, (err) => this.onKernelReadable(err));
      } catch (err) {
        this.syscallFailed(err, 'poll');
        return;
      }
      if (this.rxWanted) this.poller.start();
    }
  }

  override _read(): void {
    if (this.rxWanted || !this.started) {
      this.rxWanted = true;
      return;
    }
    this.rxWanted = true;
    if (this.rxEnded || this.destroyed) return;
    if (this.rxSide.side === 'kernel') {
      this.poller?.start();
    } else {
      this.pumpJs();
      if (this.rxWanted && !this.rxEnded) this.raw.resume();
    }
  }

  private pushData(data: Buffer, where: 'kernel' | 'userspace'): void {
    if (where === 'kernel') this.s.rxBytesKernel += data.length;
    else this.s.rxBytesUserspace += data.length;
    if (!this.push(data)) {
      this.rxWanted = false;
      if (this.rxSide.side === 'kernel') this.poller?.stop();
      else this.raw.pause();
    }
  }

  private pumpJs(): void {
    if (this.rxSide.side !== 'js') return;
    const reader = this.rxSide.reader;
    while (this.rxWanted && !this.rxEnded && !this.destroyed) {
      const ev = reader.next();
      this.s.rxRecordsUserspace = reader.records;
      if (!ev) {
        // The reader is drained: a FIN already seen is the EOF now.
        if (this.peerFinSeen) this.onPeerFin();
        return;
      }
      if (!this.onRxEvent(ev, 'userspace', true)) return;
    }
  }

  private onKernelReadable(err: NativeSyscallError | null): void {
    if (this.destroyed || this.rxEnded) return;
    if (err) {
      this.syscallFailed(err, 'poll');
      return;
    }
    const buf = this.rxBuf!;
    for (let i = 0; i < RX_BATCH && this.rxWanted && !this.rxEnded && !this.destroyed; i++) {
      let r;
      try {
        r = this.native!.recvRecord(this.fd, buf);
      } catch (e) {
        this.onKernelRxError(e);
        return;
      }
      if (r === null) return; // EAGAIN: the poller calls again
      if (r.eof) {
        this.onPeerFin();
        return;
      }
      if (r.type === ContentType.APPLICATION_DATA) {
        // The buffer is reused: hand the front its own copy.
        if (r.bytes > 0) this.pushData(Buffer.from(buf.subarray(0, r.bytes)), 'kernel');
        continue;
      }
      const ev = this.kernelControl(r.type, Buffer.from(buf.subarray(0, r.bytes)));
      for (const e of ev) if (!this.onRxEvent(e, 'kernel', false)) return;
    }
  }

  private kernelControl(type: number, data: Buffer): RxEvent[] {
    if (type === ContentType.ALERT) {
      const alert = parseAlert(data);
      return alert
        ? [{ kind: 'alert', level: alert.level, description: alert.description }]
        : [{ kind: 'fatal', alert: AlertDescription.DECODE_ERROR, why: 'malformed alert' }];
    }
    if (type === ContentType.HANDSHAKE) return this.parser.push(data);
    return [{ kind: 'fatal', alert: AlertDescription.UNEXPECTED_MESSAGE, why: `record type ${type} after the handshake` }];
  }

  private onKernelRxError(err: unknown): void {
    const info = classifyKtlsError(err, 'read');
    this.events.syscallError?.(info);
    switch (info.kind) {
      case 'would_block':
        return;
      case 'decrypt_error':
        this.events.decryptError?.('kernel');
        this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS: a record failed authentication (EBADMSG)'));
        return;
      case 'closed':
        this.destroy();
        return;
      default:
        // EKEYEXPIRED here means a KeyUpdate was consumed without a rekey: a bug, never a half state.
        this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS receive failed: ${info.errno}`, { cause: err }));
    }
  }

  /** Handle one RX event; false when the stream must stop reading (ended or destroyed). */
  private onRxEvent(ev: RxEvent, where: 'kernel' | 'userspace', rxAlreadyRekeyed: boolean): boolean {
    switch (ev.kind) {
      case 'data':
        this.pushData(ev.data, where);
        return true;
      case 'alert':
        return this.onAlert(ev.level, ev.description);
      case 'key_update':
        return this.onKeyUpdate(ev.requested, rxAlreadyRekeyed);
      case 'renegotiation':
        return this.onRenegotiation();
      case 'fatal':
        if (ev.why.startsWith('decrypt_error')) this.events.decryptError?.(where);
        this.fatal(ev.alert, ev.why);
        return false;
    }
  }

  /**
   * TLS 1.2 client renegotiation is never allowed (the record layer is not
   * OpenSSL any more). The first ClientHello gets a polite no_renegotiation
   * warning, as OpenSSL can be told to send (a client then gives up or goes
   * on without it); a client that asks again is not listening: fatal alert.
   */
  private onRenegotiation(): boolean {
    this.s.renegotiationsRefused++;
    const again = this.s.renegotiationsRefused > 1;
    this.events.renegotiationRefused?.(again);
    if (again) {
      this.s.endReason ??= 'renegotiation_refused';
      this.fatal(AlertDescription.UNEXPECTED_MESSAGE, 'client renegotiation after no_renegotiation');
      return false;
    }
    this.sendControl(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION));
    return true;
  }

  private onAlert(level: number, description: number): boolean {
    if (description === AlertDescription.CLOSE_NOTIFY) {
      this.s.closeNotifyIn = true;
      this.endRx();
      return false;
    }
    this.s.alertsIn++;
    this.events.peerAlert?.(level, description);
    // user_canceled is followed by close_notify; TLS 1.2 warnings carry on.
    if (description === AlertDescription.USER_CANCELED) return true;
    if (this.version === 'TLSv1.2' && level === AlertLevel.WARNING) return true;
    this.stopRx();
    this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `peer sent fatal alert ${description}`));
    return false;
  }

  private onPeerFin(): void {
    if (this.rxEnded) return;
    if (this.rxSide.side === 'js' && !this.peerFinSeen) {
      // Every record still in the JS reader was sent before this FIN. The
      // reader only drains while the owner reads (backpressure, or a front
      // that has not started reading yet), so the EOF must wait for pumpJs()
      // to find it empty; ending here would drop those records.
      this.peerFinSeen = true;
      this.pumpJs();
      return;
    }
    if (!this.s.closeNotifyIn) this.s.truncated = true;
    this.endRx();
  }

  private endRx(): void {
    if (this.rxEnded) return;
    this.stopRx();
    this.push(null);
  }

  private stopRx(): void {
    this.rxEnded = true;
    if (this.poller) this.poller.stop();
    if (this.rxSide.side === 'js') this.raw.pause();
  }

  // ------------------------------------------------------- KeyUpdate --

  private onKeyUpdate(requested: boolean, rxAlreadyRekeyed: boolean): boolean {
    this.s.keyUpdatesIn++;
    if (!this.limiter.allow()) {
      this.events.keyUpdate?.('rx', 'rate_limited');
      this.s.endReason = 'key_update_limit';
      this.stopRx();
      this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, 'too many KeyUpdates from the peer'));
      return false;
    }
    if (this.rxSide.side === 'kernel' && !rxAlreadyRekeyed) {
      if (!this.rekeySupported || !this.rxSide.secrets) {
        // The kernel would decrypt the next record with the old key: end cleanly now.
        this.events.keyUpdate?.('rx', 'unsupported');
        this.gracefulEnd('rekey_unsupported');
        return false;
      }
      this.refreshKernelRecordCounts();
      const info = this.rxSide.secrets.next();
      try {
        this.native!.setCryptoInfo(this.fd, 'rx', info);
      } catch (err) {
        wipeCryptoInfo(info);
        const c = classifyKtlsError(err, 'rekey_rx');
        this.events.syscallError?.(c);
        this.events.keyUpdate?.('rx', c.kind === 'busy' || c.kind === 'unsupported' ? 'unsupported' : 'failed');
        // RX cannot go on, TX still can: say goodbye properly.
        this.gracefulEnd('rekey_unsupported');
        return false;
      }
      this.rxSeqBase = 0n;
    }
    this.events.keyUpdate?.('rx', 'ok');
    // RFC 8446 4.6.3: answer before sending more data (or close, if we cannot).
    if (requested) return this.sendOurKeyUpdate('rekey_unsupported');
    return true;
  }

  /**
   * TLS 1.3 key usage limit: after a data write, every `keyUsageCheckWrites`
   * writes, rotate TX with our own KeyUpdate(update_not_requested) once the
   * current key has protected `txKeyRecordLimit` records.
   */
  private afterDataWrite(): void {
    if (this.version !== 'TLSv1.3' || this.txRotationQueued || this.txClosed) return;
    if (++this.writesSinceKeyCheck < this.keyUsageCheckWrites) return;
    this.writesSinceKeyCheck = 0;
    const tx = this.txSide;
    const used = tx.side === 'js' ? tx.protection.seq : this.kernelSeq('tx');
    if (used < this.txKeyRecordLimit) return;
    this.sendOurKeyUpdate('key_usage_limit');
  }

  /**
   * Queue our KeyUpdate(update_not_requested) under the current TX key, then
   * switch TX to the next key. Where TX cannot be rekeyed (kernel without
   * rekey), end the connection gracefully with `reasonIfImpossible`.
   */
  private sendOurKeyUpdate(reasonIfImpossible: string): boolean {
    const tx = this.txSide;
    if (tx.side === 'kernel' && (!this.rekeySupported || !tx.secrets)) {
      this.events.keyUpdate?.('tx', 'unsupported');
      this.gracefulEnd(reasonIfImpossible);
      return false;
    }
    this.txRotationQueued = true;
    this.runTx((done) => {
      this.txRotationQueued = false;
      if (this.txClosed || this.destroyed) return done();
      const msg = buildKeyUpdate(false);
      if (tx.side === 'js') {
        this.rawWrite(tx.protection.seal(ContentType.HANDSHAKE, msg), done);
        this.s.txRecordsUserspace++;
        tx.protection.keyUpdate();
        this.s.keyUpdatesOut++;
        this.events.keyUpdate?.('tx', 'ok');
        return;
      }
      this.sendKernelRecord(ContentType.HANDSHAKE, msg, (err) => {
        if (err) return done(err);
        this.refreshKernelRecordCounts();
        const info = tx.secrets!.next();
        try {
          this.native!.setCryptoInfo(this.fd, 'tx', info);
        } catch (e) {
          wipeCryptoInfo(info);
          const c = classifyKtlsError(e, 'rekey_tx');
          this.events.syscallError?.(c);
          this.events.keyUpdate?.('tx', 'failed');
          // Our KeyUpdate is on the wire: the peer now expects the new key. No way on.
          this.txClosed = true;
          return done(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS TX rekey failed: ${c.errno}`));
        }
        this.txSeqBase = 0n;
        this.s.keyUpdatesOut++;
        this.events.keyUpdate?.('tx', 'ok');
        done();
      });
    });
    return true;
  }

  /**
   * End the connection cleanly from our side: no more reading, close_notify
   * after what is already queued, then FIN. The front sees EOF; writes after
   * this point are dropped with the stream's destruction.
   */
  private gracefulEnd(reason: string): void {
    this.s.endReason ??= reason;
    this.endRx();
    this.runTx((done) => {
      this.sendCloseNotify((err) => {
        this.txClosed = true;
        if (err) return done(err);
        this.raw.end(() => {
          done();
          this.destroy();
        });
      });
    });
  }

  /** Protocol violation by the peer: our fatal alert (best effort), then close. */
  private fatal(alert: number, why: string): void {
    this.stopRx();
    const err = new SidecarError(ErrorCodes.KTLS_CONTROL, `TLS protocol error: ${why}`);
    if (this.txClosed || this.destroyed) {
      this.destroy(err);
      return;
    }
    this.runTx((done) => {
      this.sendAnyRecord(ContentType.ALERT, buildAlert(AlertLevel.FATAL, alert), () => {
        this.txClosed = true;
        done();
        this.destroy(err);
      });
    });
  }

  // ---------------------------------------------------------------- TX --

  /** Serialise TX: data writes and control records leave in the order they were queued. */
  private runTx(op: TxOp): void {
    if (this.txBusy) {
      this.txWaiting.push(op);
      return;
    }
    this.txBusy = true;
    op((err) => {
      this.txBusy = false;
      if (err) {
        this.destroy(err);
        return;
      }
      const next = this.txWaiting.shift();
      if (next) this.runTx(next);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.runTx((done) => this.txData([chunk], (err) => {
      done(err);
      if (!err) this.afterDataWrite();
      cb(err);
    }));
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.runTx((done) => this.txData(chunks.map((c) => c.chunk), (err) => {
      done(err);
      if (!err) this.afterDataWrite();
      cb(err);
    }));
  }

  private txData(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    if (this.txClosed) {
      cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'write after the TLS connection was closed'));
      return;
    }
    const tx = this.txSide;
    let total = 0;
    for (const c of chunks) total += c.length;
    if (tx.side === 'kernel') {
      this.s.txBytesKernel += total;
      // libuv write on a kTLS TX socket: the kernel makes ≤16 KiB records of it.
      if (chunks.length === 1) this.rawWrite(chunks[0]!, cb);
      else {
        this.raw.cork();
        for (let i = 0; i < chunks.length - 1; i++) this.raw.write(chunks[i]!);
        this.rawWrite(chunks[chunks.length - 1]!, cb);
        this.raw.uncork();
      }
      return;
    }
    this.s.txBytesUserspace += total;
    const out: Buffer[] = [];
    for (const c of chunks) {
      for (let o = 0; o < c.length; o += MAX_PLAINTEXT) {
        out.push(tx.protection.seal(ContentType.APPLICATION_DATA, c.subarray(o, o + MAX_PLAINTEXT)));
        this.s.txRecordsUserspace++;
      }
    }
    this.rawWrite(out.length === 1 ? out[0]! : Buffer.concat(out), cb);
  }

  private rawWrite(buf: Buffer, cb: (err?: Error | null) => void): void {
    if (this.raw.destroyed || this.raw.writableEnded) {
      cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
      return;
    }
    this.raw.write(buf, (err) => cb(err ?? null));
  }

  /** Queue one control record behind pending writes. */
  private sendControl(type: number, data: Buffer): void {
    this.runTx((done) => {
      if (this.txClosed) return done();
      this.sendAnyRecord(type, data, done);
    });
  }

  /** Send one record of `type` via whichever side holds TX (caller holds the TX slot). */
  private sendAnyRecord(type: number, data: Buffer, cb: (err?: Error | null) => void): void {
    const tx = this.txSide;
    if (tx.side === 'js') {
      this.s.txRecordsUserspace++;
      this.rawWrite(tx.protection.seal(type, data), cb);
      return;
    }
    this.sendKernelRecord(type, data, cb);
  }

  private sendCloseNotify(cb: (err?: Error | null) => void): void {
    if (this.txClosed) return cb();
    this.sendAnyRecord(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY), (err) => {
      if (!err) this.s.closeNotifyOut = true;
      cb(err);
    });
  }

  /**
   * sendmsg with TLS_SET_RECORD_TYPE. Only called with the TX slot held, so
   * every earlier libuv write has completed and the record cannot overtake
   * data. EAGAIN (socket buffer full) is retried with a short backoff; the
   * native poller only watches readability, and control records are rare.
   */
  private sendKernelRecord(type: number, data: Buffer, cb: (err?: Error | null) => void): void {
    const deadline = performance.now() + this.controlSendTimeoutMs;
    let delay = 1;
    const attempt = (): void => {
      if (this.destroyed) return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
      let n: number;
      try {
        n = this.native!.sendRecord(this.fd, type, data);
      } catch (err) {
        const c = classifyKtlsError(err, 'write');
        this.events.syscallError?.(c);
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

  override _final(cb: (err?: Error | null) => void): void {
    this.runTx((done) => {
      this.sendCloseNotify((err) => {
        this.txClosed = true;
        if (err) {
          done(err);
          cb(err);
          return;
        }
        if (this.raw.writableEnded) {
          // gracefulEnd() already said goodbye and sent FIN.
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

  // ----------------------------------------------------------- teardown --

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.refreshKernelRecordCounts();
    this.rxEnded = true;
    this.txClosed = true;
    if (this.poller) {
      this.poller.close();
      this.poller = null;
    }
    this.wipeSecrets();
    this.rxBuf?.fill(0);
    this.raw.destroy();
    cb(err);
  }

  private wipeSecrets(): void {
    if (this.txSide.side === 'kernel') this.txSide.secrets?.wipe();
    else this.txSide.protection.wipe();
    if (this.rxSide.side === 'kernel') this.rxSide.secrets?.wipe();
    else this.rxSide.reader.rx.wipe();
  }

  private syscallFailed(err: unknown, stage: KtlsStage): void {
    const info = classifyKtlsError(err, stage);
    this.events.syscallError?.(info);
    this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS ${stage} failed: ${info.errno}`, { cause: err }));
  }

  /** The kernel's next record sequence number for a direction, or -1n when it cannot be read. */
  private kernelSeq(dir: 'tx' | 'rx'): bigint {
    if (!this.native || this.raw.destroyed) return -1n;
    try {
      return this.native.getCryptoInfo(this.fd, dir).recSeq;
    } catch (err) {
      this.events.syscallError?.(classifyKtlsError(err, 'option'));
      return -1n;
    }
  }

  /** Fold the records of the current key epoch into the counts (sequence numbers restart at each rekey). */
  private refreshKernelRecordCounts(): void {
    for (const dir of ['tx', 'rx'] as const) {
      const side = dir === 'tx' ? this.txSide : this.rxSide;
      if (side.side !== 'kernel') continue;
      const base = dir === 'tx' ? this.txSeqBase : this.rxSeqBase;
      const seq = this.kernelSeq(dir);
      // -1 once any epoch could not be read: a partial count would mislead.
      const unknown = seq < 0n || base < 0n || (dir === 'tx' ? this.s.txRecordsKernel : this.s.rxRecordsKernel) < 0;
      const n = unknown ? -1 : Number(seq - base);
      if (dir === 'tx') {
        this.s.txRecordsKernel = unknown ? -1 : this.s.txRecordsKernel + n;
        this.txSeqBase = seq;
      } else {
        this.s.rxRecordsKernel = unknown ? -1 : this.s.rxRecordsKernel + n;
        this.rxSeqBase = seq;
      }
    }
  }
}
