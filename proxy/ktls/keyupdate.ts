// TLS 1.3 KeyUpdate for connections whose record layer is (partly) in the
// kernel: the secret chain ("traffic upd", RFC 8446 7.2) that turns the
// current traffic secret into the next kernel CryptoInfo, the per-connection
// rate limit on peer KeyUpdates, and the parser for the plaintext of a
// post-handshake handshake record (what the kernel hands us as record type
// 22, or what the JS RX layer decrypts).
//
// Kernel facts this relies on (Documentation/networking/tls.rst, "TLS 1.3 Key
// Updates"; Linux >= 6.14): after delivering a KeyUpdate record the kernel
// pauses RX — reads fail with EKEYEXPIRED and poll() reports nothing — until
// setsockopt(TLS_RX) provides the next key; TX never pauses, so our own
// KeyUpdate must be sent under the old key and TLS_TX set right after.
// Older kernels refuse a second TLS_TX/TLS_RX with EBUSY.

import type { CryptoInfo, KernelCipher } from '../../native/crypto-info.js';
import { RecordProtection } from '../tls/record-protection.js';
import { tls13NextTrafficSecret } from '../tls/hkdf.js';
import { AEAD_PARAMS } from '../tls/suites.js';
import { HandshakeType, parseKeyUpdate } from '../tls/control.js';

/**
 * One direction's TLS 1.3 application traffic secret, advanced per KeyUpdate.
 * Holds only the secret (the kernel holds the key); wipe() on close.
 */
export class TrafficSecretChain {
  readonly cipher: KernelCipher;
  private secret: Buffer;
  /** How many KeyUpdates this direction has gone through. */
  generation = 0;

  /** `secret` is copied; the caller should wipe its own copy. */
  constructor(cipher: KernelCipher, secret: Buffer) {
    this.cipher = cipher;
    this.secret = Buffer.from(secret);
  }

  /**
   * Advance to application_traffic_secret_N+1 and return the kernel state for
   * it (sequence 0). The returned CryptoInfo is fresh: setCryptoInfo() zeroes
   * it, or the caller must wipeCryptoInfo() it.
   */
  next(): CryptoInfo {
    const hash = AEAD_PARAMS[this.cipher].tls13Hash;
    const nextSecret = tls13NextTrafficSecret(hash, this.secret);
    this.secret.fill(0);
    this.secret = nextSecret;
    this.generation++;
    const rp = RecordProtection.tls13(this.cipher, nextSecret, 0n);
    const info = rp.toCryptoInfo();
    rp.wipe();
    return info;
  }

  wipe(): void {
    this.secret.fill(0);
  }
}

/**
 * Sliding one-minute window over peer KeyUpdates. A peer that keeps asking
 * for updates costs two setsockopt()s and a record each time, so
 * `ktls.keyUpdateRateLimit` bounds it per connection (0 = none allowed).
 */
export class KeyUpdateRateLimiter {
  private readonly limit: number;
  private readonly now: () => number;
  private readonly windowMs: number;
  private readonly stamps: number[] = [];

  constructor(limitPerMinute: number, now: () => number = () => performance.now(), windowMs = 60_000) {
    this.limit = limitPerMinute;
    this.now = now;
    this.windowMs = windowMs;
  }

  /** Record one KeyUpdate; false when it exceeds the limit (the connection should be closed). */
  allow(): boolean {
    const t = this.now();
    while (this.stamps.length > 0 && t - (this.stamps[0] ?? t) >= this.windowMs) this.stamps.shift();
    if (this.stamps.length >= this.limit) return false;
    this.stamps.push(t);
    return true;
  }
}

export type PostHandshakeEvent =
  /** TLS 1.3 KeyUpdate; `requested` = update_requested (we must answer with our own). */
  | { kind: 'key_update'; requested: boolean }
  /** TLS 1.2 ClientHello after the handshake: renegotiation, which we refuse with a warning. */
  | { kind: 'renegotiation' }
  /** A protocol violation: answer with this fatal alert and close. */
  | { kind: 'fatal'; alert: number; why: string };

const DECODE_ERROR = 50;
const UNEXPECTED_MESSAGE = 10;

/**
 * Reassembles the plaintext of handshake records received after the
 * handshake and turns them into events. Messages may span records (RFC 8446
 * 5.1), but a KeyUpdate must end its record: data after it would be under the
 * next key.
 */
export class PostHandshakeParser {
  private buf: Buffer = Buffer.alloc(0);
  private readonly tls13: boolean;

  constructor(tls13: boolean) {
    this.tls13 = tls13;
  }

  /** Feed one handshake record's plaintext; returns the events it completes, in order. */
  push(record: Buffer): PostHandshakeEvent[] {
    if (record.length === 0) return [{ kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: 'empty handshake record' }];
    this.buf = this.buf.length ? Buffer.concat([this.buf, record]) : record;
    const out: PostHandshakeEvent[] = [];
    while (this.buf.length >= 4) {
      const type = this.buf[0] ?? 0;
      const len = this.buf.readUIntBE(1, 3);
      // Nothing legitimate after the handshake is large; refuse to buffer more.
      if (len > 65536) return [...out, { kind: 'fatal', alert: DECODE_ERROR, why: 'oversized post-handshake message' }];
      if (this.buf.length < 4 + len) break;
      const body = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      if (this.tls13 && type === HandshakeType.KEY_UPDATE) {
        const requested = parseKeyUpdate(body);
        if (requested === null) return [...out, { kind: 'fatal', alert: DECODE_ERROR, why: 'malformed KeyUpdate' }];
        if (this.buf.length !== 0) {
          return [...out, { kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: 'KeyUpdate not at the end of its record' }];
        }
        out.push({ kind: 'key_update', requested });
      } else if (!this.tls13 && type === HandshakeType.CLIENT_HELLO) {
        out.push({ kind: 'renegotiation' });
      } else {
        return [...out, { kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: `post-handshake message type ${type}` }];
      }
    }
    // A KeyUpdate header split across records is legal but the record
    // boundary is then mid-message; keep the bytes for the next record.
    if (this.buf.length > 0) this.buf = Buffer.from(this.buf);
    return out;
  }

  /** True when a message is partly buffered. */
  get pending(): boolean {
    return this.buf.length > 0;
  }
}
