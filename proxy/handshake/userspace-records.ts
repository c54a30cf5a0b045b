// A TLS record layer in JS, built only from what a handoff produces: the
// per-direction CryptoInfo (what the kernel would be given), the TLS 1.3
// traffic secrets, and the ciphertext already read (`leftover`). It is a
// plaintext Duplex over the raw socket:
//   RX: decrypt records; application data out; close_notify → EOF; fatal
//       alerts → error; TLS 1.3 KeyUpdate → next RX key, answered when the
//       peer asks; TLS 1.2 renegotiation → refused (warning no_renegotiation).
//   TX: application data in ≤ 2^14-byte records; end() → close_notify + FIN;
//       keyUpdate() for a server-initiated TLS 1.3 KeyUpdate.
// TX goes through a RecordWriter. `UserspaceRecordWriter` protects records in
// JS; a kernel-TX writer (plaintext writes + control records via sendmsg)
// implements the same interface, which is how production runs RX here while
// the kernel holds TX. On hosts without kTLS it validates handoff state
// end-to-end against real clients.

import type net from 'node:net';
import { Duplex } from 'node:stream';
import { ErrorCodes, SidecarError } from '../errors.js';
import type { CryptoInfo, TlsVersion } from '../../native/crypto-info.js';
import { AlertDescription, AlertLevel, ContentType, HandshakeType, buildAlert, buildKeyUpdate, parseAlert, parseKeyUpdate } from '../tls/control.js';
import { MAX_PLAINTEXT, RecordProtection } from '../tls/record-protection.js';
import { resumeReading } from './read-control.js';
import { HandshakeReassembler, RecordFramer } from './records.js';

/** TLS 1.3 records per key before we rotate it (RFC 8446 5.5: AES-GCM ≈ 2^24.5). */
const KEY_UPDATE_AFTER_RECORDS = 1n << 24n;
/** RFC 8446 5.2: protected record payload ≤ 2^14 + 256. */
const MAX_TLS13_CIPHERTEXT = 16384 + 256;

/** Where protected records go. */
export interface RecordWriter {
  readonly version: TlsVersion;
  /** Protect and send application data; `cb` once it may write more. */
  writeData(data: Buffer, cb: (err?: Error | null) => void): void;
  /** Send one control record (alert or handshake message) under the current TX key. */
  writeControl(type: number, body: Buffer): void;
  /** TLS 1.3: move TX to the next traffic secret (our KeyUpdate has just gone out). */
  keyUpdate(): void;
  /** No more records: flush, then FIN. */
  end(cb: () => void): void;
  /** Zero all key material. */
  wipe(): void;
}

/** Records protected in JS and written to the raw socket. */
export class UserspaceRecordWriter implements RecordWriter {
  readonly version: TlsVersion;
  private readonly prot: RecordProtection;

  constructor(private readonly raw: net.Socket, tx: CryptoInfo, txSecret?: Buffer) {
    this.prot = RecordProtection.fromCryptoInfo(tx, txSecret);
    this.version = tx.version;
  }

  writeData(data: Buffer, cb: (err?: Error | null) => void): void {
    const records: Buffer[] = [];
    for (let o = 0; o < data.length; o += MAX_PLAINTEXT) {
      this.rotateIfWorn(records);
      records.push(this.prot.seal(ContentType.APPLICATION_DATA, data.subarray(o, o + MAX_PLAINTEXT)));
    }
    this.write(Buffer.concat(records), cb);
  }

  writeControl(type: number, body: Buffer): void {
    this.write(this.prot.seal(type, body));
  }

  keyUpdate(): void {
    this.prot.keyUpdate();
  }

  end(cb: () => void): void {
    if (this.raw.destroyed || this.raw.writableEnded) cb();
    else this.raw.end(cb);
  }

  wipe(): void {
    this.prot.wipe();
  }

  private rotateIfWorn(records: Buffer[]): void {
    if (this.version !== 'TLSv1.3' || this.prot.seq < KEY_UPDATE_AFTER_RECORDS) return;
    records.push(this.prot.seal(ContentType.HANDSHAKE, buildKeyUpdate(false)));
    this.prot.keyUpdate();
  }

  private write(buf: Buffer, cb?: (err?: Error | null) => void): void {
    if (this.raw.destroyed || this.raw.writableEnded) {
      cb?.();
      return;
    }
    this.raw.write(buf, cb);
  }
}

export interface UserspaceRecordsInit {
  /** The handed-off socket (reads stopped by the engine; this class resumes them). */
  raw: net.Socket;
  rx: CryptoInfo;
  /** TLS 1.3: needed to follow the client's KeyUpdate. */
  rxSecret?: Buffer;
  /** Ciphertext already read after the client Finished. */
  leftover: Buffer;
  /** The client's FIN was already read. */
  peerEnded?: boolean;
  /** TX path: a writer, or the CryptoInfo (+ TLS 1.3 secret) for a JS writer on `raw`. */
  tx: RecordWriter | { info: CryptoInfo; secret?: Buffer };
}

export interface UserspaceRecordStats {
  recordsIn: number;
  appBytesIn: number;
  appBytesOut: number;
  keyUpdatesIn: Array<'update_requested' | 'update_not_requested'>;
  keyUpdatesOut: Array<'update_requested' | 'update_not_requested'>;
  closeNotifyIn: boolean;
  closeNotifyOut: boolean;
  /** Alerts received, as `level/description`. */
  alertsIn: string[];
  renegotiationsRefused: number;
  /** FIN without close_notify. */
  truncated: boolean;
}

export class UserspaceRecords extends Duplex {
  readonly stats: UserspaceRecordStats = {
    recordsIn: 0, appBytesIn: 0, appBytesOut: 0, keyUpdatesIn: [], keyUpdatesOut: [],
    closeNotifyIn: false, closeNotifyOut: false, alertsIn: [], renegotiationsRefused: 0, truncated: false,
  };
  private readonly raw: net.Socket;
  private readonly rx: RecordProtection;
  private readonly tx: RecordWriter;
  private readonly version: TlsVersion;
  private readonly framer = new RecordFramer();
  private readonly hs = new HandshakeReassembler(64 * 1024);
  private rxDone = false;

  constructor(init: UserspaceRecordsInit) {
    super({ allowHalfOpen: true });
    this.raw = init.raw;
    this.rx = RecordProtection.fromCryptoInfo(init.rx, init.rxSecret);
    this.version = init.rx.version;
    this.tx = 'writeData' in init.tx ? init.tx : new UserspaceRecordWriter(init.raw, init.tx.info, init.tx.secret);
    if (this.tx.version !== this.version) throw new RangeError('TX and RX versions differ');
    if (init.leftover.length) this.framer.push(Buffer.from(init.leftover));
    const raw = this.raw;
    raw.on('data', (d: Buffer) => {
      this.framer.push(d);
      this.drain();
    });
    raw.on('end', () => this.onPeerEnd());
    raw.on('error', (e) => this.destroy(e));
    raw.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
    process.nextTick(() => {
      this.drain(); // the leftover first, in order
      if (init.peerEnded) this.onPeerEnd();
      else resumeReading(raw);
    });
  }

  /** Send a TLS 1.3 KeyUpdate (server-initiated); `requestPeer` asks the client to update too. */
  keyUpdate(requestPeer = true): void {
    if (this.version !== 'TLSv1.3') throw new SidecarError(ErrorCodes.KTLS_CONTROL, 'KeyUpdate exists only in TLS 1.3');
    this.sendKeyUpdate(requestPeer);
  }

  private sendKeyUpdate(requestPeer: boolean): void {
    this.tx.writeControl(ContentType.HANDSHAKE, buildKeyUpdate(requestPeer));
    this.tx.keyUpdate();
    this.stats.keyUpdatesOut.push(requestPeer ? 'update_requested' : 'update_not_requested');
  }

  private onPeerEnd(): void {
    if (this.rxDone) return;
    this.drain();
    if (this.rxDone) return;
    this.stats.truncated = true;
    this.rxDone = true;
    this.push(null);
  }

  private drain(): void {
    while (!this.rxDone && !this.destroyed) {
      let rec;
      try {
        rec = this.framer.take();
      } catch {
        return this.fatal(AlertDescription.DECODE_ERROR, 'peer sent something that is not a TLS record');
      }
      if (!rec) return;
      this.stats.recordsIn++;
      if (this.version === 'TLSv1.3' && rec.payload.length > MAX_TLS13_CIPHERTEXT) {
        return this.fatal(AlertDescription.RECORD_OVERFLOW, 'record too long');
      }
      if (this.version === 'TLSv1.3' && rec.type === ContentType.CHANGE_CIPHER_SPEC) {
        return this.fatal(AlertDescription.UNEXPECTED_MESSAGE, 'change_cipher_spec after the handshake');
      }
      const o = this.rx.open(rec.header, rec.payload);
      if (!o) return this.fatal(AlertDescription.BAD_RECORD_MAC, `record ${this.rx.seq} does not decrypt`);
      if (o.type === ContentType.APPLICATION_DATA) {
        if (this.hs.empty === false) return this.fatal(AlertDescription.UNEXPECTED_MESSAGE, 'data inside a handshake message');
        if (o.data.length) {
          this.stats.appBytesIn += o.data.length;
          if (!this.push(o.data)) this.raw.pause();
        }
      } else if (o.type === ContentType.ALERT) {
        this.onAlert(o.data);
      } else if (o.type === ContentType.HANDSHAKE) {
        this.onHandshake(o.data);
      } else {
        return this.fatal(AlertDescription.UNEXPECTED_MESSAGE, `record type ${o.type}`);
      }
    }
  }

  private onAlert(body: Buffer): void {
    const alert = parseAlert(body);
    if (!alert) return this.fatal(AlertDescription.DECODE_ERROR, 'malformed alert');
    this.stats.alertsIn.push(`${alert.level}/${alert.description}`);
    if (alert.description === AlertDescription.CLOSE_NOTIFY) {
      this.stats.closeNotifyIn = true;
      this.rxDone = true; // nothing may follow close_notify
      this.push(null);
      return;
    }
    if (alert.description === AlertDescription.USER_CANCELED) return;
    if (this.version === 'TLSv1.2' && alert.level === AlertLevel.WARNING) return;
    this.rxDone = true;
    this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `peer sent fatal alert ${alert.description}`));
  }

  private onHandshake(data: Buffer): void {
    let msgs;
    try {
      msgs = this.hs.push(data);
    } catch {
      return this.fatal(AlertDescription.DECODE_ERROR, 'oversized handshake message');
    }
    for (const m of msgs) {
      if (this.version === 'TLSv1.3' && m.type === HandshakeType.KEY_UPDATE) {
        const requested = parseKeyUpdate(m.body);
        if (requested === null) return this.fatal(AlertDescription.DECODE_ERROR, 'malformed KeyUpdate');
        // RFC 8446 5.1: a KeyUpdate must end its record (the next one uses the new key).
        if (!this.hs.empty || m !== msgs[msgs.length - 1]) return this.fatal(AlertDescription.UNEXPECTED_MESSAGE, 'KeyUpdate not at the end of its record');
        this.rx.keyUpdate();
        this.stats.keyUpdatesIn.push(requested ? 'update_requested' : 'update_not_requested');
        if (requested) this.sendKeyUpdate(false);
      } else if (this.version === 'TLSv1.2' && m.type === HandshakeType.CLIENT_HELLO) {
        // Renegotiation would need OpenSSL, which is gone: decline, the connection goes on.
        this.stats.renegotiationsRefused++;
        this.tx.writeControl(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION));
      } else {
        return this.fatal(AlertDescription.UNEXPECTED_MESSAGE, `post-handshake message type ${m.type}`);
      }
    }
  }

  private fatal(description: number, why: string): void {
    this.rxDone = true;
    try {
      this.tx.writeControl(ContentType.ALERT, buildAlert(AlertLevel.FATAL, description));
    } catch {
      // the alert is best effort; the connection ends either way
    }
    this.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, why));
  }

  override _read(): void {
    if (!this.rxDone && this.raw.isPaused() && !this.raw.destroyed) this.raw.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.stats.appBytesOut += chunk.length;
    this.tx.writeData(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.tx.writeControl(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY));
    this.stats.closeNotifyOut = true;
    this.tx.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.rxDone = true;
    this.rx.wipe();
    this.tx.wipe();
    this.hs.wipe();
    this.raw.destroy();
    callback(error);
  }
}
