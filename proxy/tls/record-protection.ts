// One direction of TLS record protection, built from exactly what the kernel
// is given for that direction (a CryptoInfo) plus, for TLS 1.3, the traffic
// secret KeyUpdate needs. Seals and opens whole records in the TLS 1.2 and
// TLS 1.3 AEAD formats, and converts back to a CryptoInfo, so code that
// works with this class also validates the CryptoInfo it came from.

import type { CryptoInfo, KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { AEAD_TAG_LENGTH, type AeadOpener, aeadOpener, aeadSeal, seqBytes, xorNonceWords } from './aead.js';
import { ContentType } from './control.js';
import { tls13NextTrafficSecret, tls13TrafficKeys } from './hkdf.js';
import type { AeadParams } from './suites.js';
import { AEAD_PARAMS } from './suites.js';

/** RFC 8446 5.1: maximum plaintext per record. */
export const MAX_PLAINTEXT = 16384;
const MAX_SEQ = 0xffff_ffff_ffff_ffffn;
const WORD = 0xffff_ffff;

export interface OpenedRecord {
  /** Content type: the outer type for TLS 1.2, the inner type for TLS 1.3. */
  type: number;
  data: Buffer;
  /** TLS 1.2 GCM/CCM: the record's explicit nonce. */
  explicitNonce?: bigint;
}

export class RecordProtection {
  private readonly params: AeadParams;
  /** The current key's opener, made at the first open (a TX-only direction never needs one). */
  private opener: AeadOpener | null = null;
  /** The current record's nonce, rebuilt in place for each record (xorNonceWords). */
  private readonly nonce = Buffer.alloc(12);
  /**
   * The sequence number of the next record as two unsigned 32-bit halves: the
   * per-record nonce is built from them without BigInt arithmetic. `seq` is
   * the bigint view.
   */
  private seqHi = 0;
  private seqLo = 0;
  /** TLS 1.2's additional data (sequence number, type, version, length), rebuilt in place for each record opened. */
  private readonly aad12 = Buffer.alloc(13);

  private constructor(
    readonly version: TlsVersion,
    readonly cipher: KernelCipher,
    private key: Buffer,
    /** TLS 1.3 and ChaCha20: 12-byte IV; TLS 1.2 GCM/CCM: 4-byte salt. */
    private iv: Buffer,
    seq: bigint,
    private explicitNonce: bigint | null,
    private secret: Buffer | null,
  ) {
    this.params = AEAD_PARAMS[cipher];
    if (key.length !== this.params.keyLength) throw new RangeError('key length does not match the cipher');
    this.seq = seq;
  }

  /** Sequence number of the next record. */
  get seq(): bigint {
    return (BigInt(this.seqHi) << 32n) | BigInt(this.seqLo);
  }

  set seq(value: bigint) {
    if (value < 0n || value > MAX_SEQ) throw new RangeError('sequence number out of 64-bit range');
    this.seqHi = Number(value >> 32n);
    this.seqLo = Number(value & 0xffff_ffffn);
  }

  /** At 2^64 - 1 nothing more is sealed or opened: the last record a direction can use is number 2^64 - 2. */
  private get seqExhausted(): boolean {
    return this.seqHi === WORD && this.seqLo === WORD;
  }

  private advance(): void {
    if (this.seqLo === WORD) {
      this.seqLo = 0;
      this.seqHi++;
    } else {
      this.seqLo++;
    }
  }

  /** iv XOR the sequence number, into the reused nonce buffer (TLS 1.3, and ChaCha20 in TLS 1.2). */
  private xorNonce(): Buffer {
    return xorNonceWords(this.nonce, this.iv, this.seqHi, this.seqLo);
  }

  /** The 8-byte sequence number of the TLS 1.2 additional data. */
  private seqField(): Buffer {
    const b = Buffer.allocUnsafe(8);
    b.writeUInt32BE(this.seqHi, 0);
    b.writeUInt32BE(this.seqLo, 4);
    return b;
  }

  /** TLS 1.3 direction from a traffic secret (the secret is copied). */
  static tls13(cipher: KernelCipher, secret: Buffer, seq = 0n): RecordProtection {
    const p = AEAD_PARAMS[cipher];
    const k = tls13TrafficKeys(p.tls13Hash, secret, p.keyLength);
    return new RecordProtection('TLSv1.3', cipher, k.key, k.iv, seq, null, Buffer.from(secret));
  }

  /**
   * TLS 1.2 direction from the key block parts (copied): `writeIv` is
   * client/server_write_IV, 4 bytes (GCM/CCM) or 12 (ChaCha20);
   * `explicitNonce` that of the next record (GCM/CCM sender only).
   */
  static tls12(s: { cipher: KernelCipher; key: Buffer; writeIv: Buffer; seq: bigint; explicitNonce: bigint | null }): RecordProtection {
    const p = AEAD_PARAMS[s.cipher];
    if (s.writeIv.length !== p.tls12FixedIvLength) throw new RangeError('write IV length does not match the cipher');
    return new RecordProtection('TLSv1.2', s.cipher, Buffer.from(s.key), Buffer.from(s.writeIv), s.seq,
      p.tls12ExplicitNonceLength ? s.explicitNonce : null, null);
  }

  /**
   * Rebuild from a kernel CryptoInfo (+ TLS 1.3 secret for KeyUpdate). The
   * inverse of toCryptoInfo(): for TLS 1.3 GCM/CCM the 12-byte IV is
   * salt || iv; for ChaCha20 the whole IV is `iv`; for TLS 1.2 GCM/CCM `salt`
   * is the write IV and `iv` the next explicit nonce.
   */
  static fromCryptoInfo(info: CryptoInfo, secret?: Buffer): RecordProtection {
    const p = AEAD_PARAMS[info.cipher];
    const key = Buffer.from(info.key);
    if (p.algorithm === 'chacha20-poly1305') {
      if (info.iv.length !== 12 || info.salt.length !== 0) throw new RangeError('ChaCha20 CryptoInfo needs a 12-byte iv and no salt');
      return new RecordProtection(info.version, info.cipher, key, Buffer.from(info.iv), info.recSeq, null,
        info.version === 'TLSv1.3' && secret ? Buffer.from(secret) : null);
    }
    if (info.iv.length !== 8 || info.salt.length !== 4) throw new RangeError('GCM/CCM CryptoInfo needs an 8-byte iv and 4-byte salt');
    if (info.version === 'TLSv1.3') {
      return new RecordProtection('TLSv1.3', info.cipher, key, Buffer.concat([info.salt, info.iv]), info.recSeq, null,
        secret ? Buffer.from(secret) : null);
    }
    return new RecordProtection('TLSv1.2', info.cipher, key, Buffer.from(info.salt), info.recSeq,
      info.iv.readBigUInt64BE(0), null);
  }

  /** The kernel's view of this direction (fresh Buffers: wipe them after install). */
  toCryptoInfo(): CryptoInfo {
    const base = { version: this.version, cipher: this.cipher, key: Buffer.from(this.key), recSeq: this.seq };
    if (this.params.algorithm === 'chacha20-poly1305') return { ...base, iv: Buffer.from(this.iv), salt: Buffer.alloc(0) };
    if (this.version === 'TLSv1.3') {
      return { ...base, iv: Buffer.from(this.iv.subarray(4, 12)), salt: Buffer.from(this.iv.subarray(0, 4)) };
    }
    // TLS 1.2 GCM/CCM: `iv` = next explicit nonce (TX). A receiver reads the
    // nonce from each record, so for RX the kernel ignores it; we pass the
    // sequence number, which is what a sender starting fresh would use.
    return { ...base, iv: seqBytes(this.explicitNonce ?? this.seq), salt: Buffer.from(this.iv) };
  }

  /** TLS 1.3: copy of the current traffic secret (null for TLS 1.2 or when unknown). */
  trafficSecret(): Buffer | null {
    return this.secret ? Buffer.from(this.secret) : null;
  }

  /** TLS 1.3 with its traffic secret: keyUpdate() can derive the next key. */
  get canKeyUpdate(): boolean {
    return this.secret !== null;
  }

  /**
   * Seal one record and return it with its 5-byte header. TLS 1.3 adds the
   * inner content type and `padding` zero bytes (RFC 8446 5.4).
   */
  seal(type: number, plaintext: Buffer, padding = 0): Buffer {
    if (plaintext.length > MAX_PLAINTEXT) throw new RangeError('record plaintext over 2^14 bytes');
    if (this.seqExhausted) throw new RangeError('record sequence number exhausted');
    const out = this.version === 'TLSv1.3' ? this.seal13(type, plaintext, padding) : this.seal12(type, plaintext);
    this.advance();
    return out;
  }

  private seal13(type: number, plaintext: Buffer, padding: number): Buffer {
    if (padding < 0 || plaintext.length + 1 + padding > MAX_PLAINTEXT + 1) throw new RangeError('bad TLS 1.3 padding');
    const inner = Buffer.alloc(plaintext.length + 1 + padding);
    plaintext.copy(inner);
    inner[plaintext.length] = type;
    const header = recordHeader(ContentType.APPLICATION_DATA, inner.length + AEAD_TAG_LENGTH);
    const sealed = aeadSeal(this.params.algorithm, this.key, this.xorNonce(), header, inner);
    inner.fill(0);
    return Buffer.concat([header, sealed]);
  }

  private seal12(type: number, plaintext: Buffer): Buffer {
    const aad = Buffer.concat([this.seqField(), recordHeader(type, plaintext.length)]);
    let explicit: Buffer = Buffer.alloc(0);
    let nonce: Buffer;
    if (this.params.tls12ExplicitNonceLength) {
      if (this.explicitNonce === null) throw new Error('TLS 1.2 GCM/CCM sender needs an explicit nonce counter');
      explicit = seqBytes(this.explicitNonce);
      nonce = Buffer.concat([this.iv, explicit]);
      this.explicitNonce = (this.explicitNonce + 1n) & MAX_SEQ;
    } else {
      nonce = this.xorNonce();
    }
    const sealed = aeadSeal(this.params.algorithm, this.key, nonce, aad, plaintext);
    return Buffer.concat([recordHeader(type, explicit.length + sealed.length), explicit, sealed]);
  }

  /**
   * Open one record (5-byte header + payload). Returns null, without
   * advancing the sequence number, when it does not authenticate or is
   * malformed (e.g. TLS 1.3 all-zero inner plaintext).
   */
  open(header: Buffer, payload: Buffer): OpenedRecord | null {
    if (header.length !== 5 || this.seqExhausted) return null;
    const out = this.version === 'TLSv1.3' ? this.open13(header, payload) : this.open12(header, payload);
    if (out) this.advance();
    return out;
  }

  private open13(header: Buffer, payload: Buffer): OpenedRecord | null {
    if (header[0] !== ContentType.APPLICATION_DATA) return null;
    const pt = this.openerOf().open(this.xorNonce(), header, payload);
    if (!pt) return null;
    let i = pt.length - 1;
    while (i >= 0 && pt[i] === 0) i--; // strip padding
    if (i < 0) return null;
    return { type: pt[i] ?? 0, data: pt.subarray(0, i) };
  }

  private open12(header: Buffer, payload: Buffer): OpenedRecord | null {
    const type = header[0] ?? 0;
    const explicitLen = this.params.tls12ExplicitNonceLength;
    if (payload.length < explicitLen + AEAD_TAG_LENGTH) return null;
    let nonce: Buffer;
    let explicitNonce: bigint | undefined;
    if (explicitLen) {
      // salt || the record's explicit nonce (RFC 5288 3), in the reused nonce buffer.
      nonce = this.nonce;
      this.iv.copy(nonce, 0);
      payload.copy(nonce, this.iv.length, 0, explicitLen);
      explicitNonce = payload.readBigUInt64BE(0);
    } else {
      nonce = this.xorNonce();
    }
    const body = payload.subarray(explicitLen);
    const aad = this.aad12;
    aad.writeUInt32BE(this.seqHi, 0);
    aad.writeUInt32BE(this.seqLo, 4);
    aad[8] = type;
    aad[9] = 3;
    aad[10] = 3;
    aad.writeUInt16BE(body.length - AEAD_TAG_LENGTH, 11);
    const pt = this.openerOf().open(nonce, aad, body);
    if (!pt) return null;
    return explicitNonce === undefined ? { type, data: pt } : { type, data: pt, explicitNonce };
  }

  private openerOf(): AeadOpener {
    return (this.opener ??= aeadOpener(this.params.algorithm, this.key));
  }

  /** TLS 1.3 KeyUpdate: move to application_traffic_secret_N+1, sequence 0. */
  keyUpdate(): void {
    if (!this.secret) throw new Error('KeyUpdate needs a TLS 1.3 traffic secret');
    const hash = this.params.tls13Hash;
    const next = tls13NextTrafficSecret(hash, this.secret);
    const k = tls13TrafficKeys(hash, next, this.params.keyLength);
    this.wipe();
    this.secret = next;
    this.key = k.key;
    this.iv = k.iv;
    this.seq = 0n;
  }

  /** Zero key, IV and secret. The object is unusable afterwards. */
  wipe(): void {
    this.opener?.wipe();
    this.opener = null;
    this.key.fill(0);
    this.iv.fill(0);
    this.nonce.fill(0);
    this.aad12.fill(0);
    this.secret?.fill(0);
  }
}

function recordHeader(type: number, length: number): Buffer {
  const h = Buffer.from([type, 3, 3, 0, 0]);
  h.writeUInt16BE(length, 3);
  return h;
}
