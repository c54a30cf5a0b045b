// The control-record state machine of an established connection, the same
// whichever side holds RX or TX:
//   close_notify → EOF (and ours on end()); fatal alerts → destroy; TLS 1.2
//   warnings and user_canceled → carry on;
//   TLS 1.3 KeyUpdate → next RX key (kernel: setsockopt(TLS_RX) again), and
//   if the peer asked, our KeyUpdate then the next TX key; rate-limited per
//   connection; a kernel that cannot rekey ends the connection gracefully;
//   TLS 1.3 key usage limit → our own KeyUpdate;
//   TLS 1.2 renegotiation → refused (a warning, then fatal);
//   protocol violations → our fatal alert, then close.
// Every record it sends is queued on the stream's TX slot, behind the data
// written before it.

import type { TlsVersion } from '../../native/crypto-info.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { AlertDescription, AlertLevel, ContentType, buildAlert, buildKeyUpdate } from '../tls/control.js';
import type { RxEvent } from '../tls/records.js';
import type { Done, RecordLayerEvents, RxPath, TxPath } from './paths.js';

export type TxOp = (done: Done) => void;

/** What the state machine drives on its stream. */
export interface ControlHost {
  readonly version: TlsVersion;
  readonly tx: TxPath;
  readonly rx: RxPath;
  readonly events: RecordLayerEvents;
  isDestroyed(): boolean;
  /** Queue a TX operation behind every earlier one. */
  runTx(op: TxOp): void;
  pushData(data: Buffer, where: 'kernel' | 'userspace'): void;
  /** EOF to the owner; no more receiving. */
  endRx(): void;
  /** No more receiving, no EOF (the stream is about to be destroyed). */
  stopRx(): void;
  /** FIN on the raw socket after what is queued. */
  endRaw(cb: () => void): void;
  destroy(err?: Error): void;
}

/** The stream options the state machine reads. */
export interface ControlOptions {
  /** `ktls.keyUpdateRateLimit`: most peer KeyUpdates per minute. */
  keyUpdateRateLimit: number;
  /** Clock for the KeyUpdate rate limit (tests). */
  now?: () => number;
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

/** The control-record counters of the connection's close log line. */
export interface ControlCounters {
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

/**
 * Sliding one-minute window over peer KeyUpdates. A peer that keeps asking
 * for updates costs two setsockopt()s and a record each time, so
 * `ktls.keyUpdateRateLimit` bounds it per connection (0 = none allowed).
 */
export class KeyUpdateRateLimiter {
  private readonly stamps: number[] = [];

  constructor(
    private readonly limit: number,
    private readonly now: () => number = () => performance.now(),
    private readonly windowMs = 60_000,
  ) {}

  /** Record one KeyUpdate; false when it exceeds the limit (the connection should be closed). */
  allow(): boolean {
    const t = this.now();
    while (this.stamps.length > 0 && t - (this.stamps[0] ?? t) >= this.windowMs) this.stamps.shift();
    if (this.stamps.length >= this.limit) return false;
    this.stamps.push(t);
    return true;
  }
}

export class ControlRecords {
  readonly counters: ControlCounters = {
    keyUpdatesIn: 0,
    keyUpdatesOut: 0,
    closeNotifyIn: false,
    closeNotifyOut: false,
    truncated: false,
    alertsIn: 0,
    renegotiationsRefused: 0,
    endReason: null,
  };
  /** No more TX once set (close_notify sent, fatal, or a TX rekey that failed). */
  txClosed = false;
  private readonly limiter: KeyUpdateRateLimiter;
  private readonly txKeyRecordLimit: bigint;
  private readonly keyUsageCheckWrites: number;
  private writesSinceKeyCheck = 0;
  private txRotationQueued = false;

  constructor(private readonly host: ControlHost, opts: ControlOptions) {
    this.limiter = new KeyUpdateRateLimiter(opts.keyUpdateRateLimit, opts.now);
    this.txKeyRecordLimit = opts.txKeyRecordLimit ?? 1n << 24n;
    this.keyUsageCheckWrites = Math.max(1, opts.keyUsageCheckWrites ?? 1024);
  }

  /** Handle one RX event; false when the stream must stop reading (ended or destroyed). */
  onRxEvent(ev: RxEvent, where: 'kernel' | 'userspace', rxAlreadyRekeyed: boolean): boolean {
    switch (ev.kind) {
      case 'data':
        this.host.pushData(ev.data, where);
        return true;
      case 'alert':
        return this.onAlert(ev.level, ev.description);
      case 'key_update':
        return this.onKeyUpdate(ev.requested, rxAlreadyRekeyed);
      case 'renegotiation':
        return this.onRenegotiation();
      case 'fatal':
        if (ev.why.startsWith('decrypt_error')) this.host.events.decryptError?.(where);
        this.fatal(ev.alert, ev.why);
        return false;
    }
  }

  /** The peer's FIN, after every record before it. */
  onPeerFin(): void {
    if (!this.counters.closeNotifyIn) this.counters.truncated = true;
    this.host.endRx();
  }

  /**
   * TLS 1.2 client renegotiation is never allowed (the record layer is not
   * OpenSSL any more). The first ClientHello gets a polite no_renegotiation
   * warning, as OpenSSL can be told to send (a client then gives up or goes
   * on without it); a client that asks again is not listening: fatal alert.
   */
  private onRenegotiation(): boolean {
    const c = this.counters;
    c.renegotiationsRefused++;
    const again = c.renegotiationsRefused > 1;
    this.host.events.renegotiationRefused?.(again);
    if (again) {
      c.endReason ??= 'renegotiation_refused';
      this.fatal(AlertDescription.UNEXPECTED_MESSAGE, 'client renegotiation after no_renegotiation');
      return false;
    }
    this.host.runTx((done) => {
      if (this.txClosed) return done();
      this.host.tx.sendRecord(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION), done);
    });
    return true;
  }

  private onAlert(level: number, description: number): boolean {
    const { host } = this;
    if (description === AlertDescription.CLOSE_NOTIFY) {
      this.counters.closeNotifyIn = true;
      host.endRx();
      return false;
    }
    this.counters.alertsIn++;
    host.events.peerAlert?.(level, description);
    // user_canceled is followed by close_notify; TLS 1.2 warnings carry on.
    if (description === AlertDescription.USER_CANCELED) return true;
    if (host.version === 'TLSv1.2' && level === AlertLevel.WARNING) return true;
    host.stopRx();
    host.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `peer sent fatal alert ${description}`));
    return false;
  }

  private onKeyUpdate(requested: boolean, rxAlreadyRekeyed: boolean): boolean {
    const { host } = this;
    this.counters.keyUpdatesIn++;
    if (!this.limiter.allow()) {
      host.events.keyUpdate?.('rx', 'rate_limited');
      this.counters.endReason = 'key_update_limit';
      host.stopRx();
      host.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, 'too many KeyUpdates from the peer'));
      return false;
    }
    if (!rxAlreadyRekeyed) {
      const result = host.rx.rekey();
      if (result !== 'ok') {
        host.events.keyUpdate?.('rx', result);
        // RX cannot go on (the next record is under the new key), TX still can: say goodbye properly.
        this.gracefulEnd('rekey_unsupported');
        return false;
      }
    }
    host.events.keyUpdate?.('rx', 'ok');
    // RFC 8446 4.6.3: answer before sending more data (or close, if we cannot).
    if (requested) return this.sendKeyUpdate(false, 'rekey_unsupported');
    return true;
  }

  /**
   * TLS 1.3 key usage limit (ControlOptions.txKeyRecordLimit): after a data
   * write, rotate TX with our own KeyUpdate(update_not_requested).
   */
  afterDataWrite(): void {
    if (this.host.version !== 'TLSv1.3' || this.txRotationQueued || this.txClosed) return;
    if (++this.writesSinceKeyCheck < this.keyUsageCheckWrites) return;
    this.writesSinceKeyCheck = 0;
    if (this.host.tx.keyUsage() < this.txKeyRecordLimit) return;
    this.sendKeyUpdate(false, 'key_usage_limit');
  }

  /**
   * The same limit after a spliced TX run (splice.ts; the caller holds the TX
   * slot): a run moves many records at once, so every run is checked.
   */
  afterSplice(): void {
    if (this.host.version !== 'TLSv1.3' || this.txRotationQueued || this.txClosed) return;
    this.writesSinceKeyCheck = 0;
    if (this.host.tx.keyUsage() < this.txKeyRecordLimit) return;
    this.sendKeyUpdate(false, 'key_usage_limit');
  }

  /**
   * Queue our KeyUpdate under the current TX key, then switch TX to the next
   * key. Where TX cannot be rekeyed (kernel without rekey), end the
   * connection gracefully with `reasonIfImpossible`.
   */
  sendKeyUpdate(requestPeer: boolean, reasonIfImpossible: string): boolean {
    const { host } = this;
    const tx = host.tx;
    if (!tx.canRekey) {
      host.events.keyUpdate?.('tx', 'unsupported');
      this.gracefulEnd(reasonIfImpossible);
      return false;
    }
    this.txRotationQueued = true;
    host.runTx((done) => {
      this.txRotationQueued = false;
      if (this.txClosed || host.isDestroyed()) return done();
      tx.sendRecord(ContentType.HANDSHAKE, buildKeyUpdate(requestPeer), (err) => {
        // Destroyed meanwhile: the keys are wiped, derive no new ones.
        if (err || host.isDestroyed()) return done(err);
        const failed = tx.rekey();
        if (failed) {
          host.events.keyUpdate?.('tx', 'failed');
          // Our KeyUpdate is on the wire: the peer now expects the new key. No way on.
          this.txClosed = true;
          return done(failed);
        }
        this.counters.keyUpdatesOut++;
        host.events.keyUpdate?.('tx', 'ok');
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
  gracefulEnd(reason: string): void {
    const { host } = this;
    this.counters.endReason ??= reason;
    host.endRx();
    host.runTx((done) => {
      this.closeNotify((err) => {
        this.txClosed = true;
        if (err) return done(err);
        host.endRaw(() => {
          done();
          host.destroy();
        });
      });
    });
  }

  /** Protocol violation by the peer: our fatal alert (best effort), then close. */
  fatal(alert: number, why: string): void {
    const { host } = this;
    host.stopRx();
    const err = new SidecarError(ErrorCodes.KTLS_CONTROL, `TLS protocol error: ${why}`);
    if (this.txClosed || host.isDestroyed()) {
      host.destroy(err);
      return;
    }
    host.runTx((done) => {
      host.tx.sendRecord(ContentType.ALERT, buildAlert(AlertLevel.FATAL, alert), () => {
        this.txClosed = true;
        done();
        host.destroy(err);
      });
    });
  }

  /** Our close_notify (the caller holds the TX slot); nothing once TX is closed. */
  closeNotify(cb: Done): void {
    if (this.txClosed) return cb();
    this.host.tx.sendRecord(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY), (err) => {
      if (!err) this.counters.closeNotifyOut = true;
      cb(err);
    });
  }
}
