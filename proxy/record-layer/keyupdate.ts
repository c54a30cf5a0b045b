// TLS 1.3 KeyUpdate state a record layer keeps per connection: the secret
// chain ("traffic upd", RFC 8446 7.2) that turns a direction's current
// traffic secret into the next kernel CryptoInfo, and the rate limit on peer
// KeyUpdates. The messages themselves are parsed and built in
// proxy/tls/control.ts.
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
