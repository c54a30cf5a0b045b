// AEAD primitives for TLS records: seal/open with a 16-byte tag, and the
// nonce constructions of RFC 8446 5.3 / RFC 7905 (iv XOR seq) and RFC 5288
// (salt || explicit nonce). Record formats live in record-protection.ts.
// aeadOpener() keeps one key's context for every record under it (the
// native addon's, where it is loaded): createDecipheriv per record costs
// more than the rest of a small request.

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { type NativeAeadOpener, native, nativeStatus } from '../../native/index.js';
import type { AeadParams } from './suites.js';

export const AEAD_TAG_LENGTH = 16;

type Algorithm = AeadParams['algorithm'];

/** 8-byte big-endian encoding of a 64-bit sequence number. */
export function seqBytes(seq: bigint): Buffer {
  if (seq < 0n || seq > 0xffff_ffff_ffff_ffffn) throw new RangeError('sequence number out of 64-bit range');
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(seq);
  return b;
}

/** RFC 8446 5.3 / RFC 7905: 12-byte iv XOR the left-padded 64-bit sequence number. */
export function xorNonce(iv12: Buffer, seq: bigint): Buffer {
  return xorNonceInto(Buffer.alloc(12), iv12, seq);
}

/**
 * xorNonce() written into `out` (12 bytes), which it returns: a direction
 * that opens or seals a record at a time reuses one buffer instead of
 * allocating two per record (the nonce is consumed before the call returns).
 */
export function xorNonceInto(out: Buffer, iv12: Buffer, seq: bigint): Buffer {
  if (seq < 0n || seq > 0xffff_ffff_ffff_ffffn) throw new RangeError('sequence number out of 64-bit range');
  return xorNonceWords(out, iv12, Number(seq >> 32n), Number(seq & 0xffff_ffffn));
}

/**
 * xorNonceInto() for a sequence number held as two unsigned 32-bit halves:
 * the per-record form (BigInt arithmetic and writeBigUInt64BE were a sixth of
 * opening a small record in JS).
 */
export function xorNonceWords(out: Buffer, iv12: Buffer, seqHi: number, seqLo: number): Buffer {
  if (iv12.length !== 12 || out.length !== 12) throw new RangeError('per-record nonce needs a 12-byte iv');
  out.writeUInt32BE(iv12.readUInt32BE(0), 0);
  out.writeUInt32BE((iv12.readUInt32BE(4) ^ seqHi) >>> 0, 4);
  out.writeUInt32BE((iv12.readUInt32BE(8) ^ seqLo) >>> 0, 8);
  return out;
}

function cipher(alg: Algorithm, key: Buffer, nonce: Buffer) {
  // Branches only to satisfy the per-mode overloads of createCipheriv.
  if (alg === 'aes-128-ccm') return createCipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  if (alg === 'chacha20-poly1305') return createCipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  return createCipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
}

function decipher(alg: Algorithm, key: Buffer, nonce: Buffer) {
  if (alg === 'aes-128-ccm') return createDecipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  if (alg === 'chacha20-poly1305') return createDecipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  return createDecipheriv(alg, key, nonce, { authTagLength: AEAD_TAG_LENGTH });
}

/** Encrypt and authenticate: returns ciphertext || tag. */
export function aeadSeal(alg: Algorithm, key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const c = cipher(alg, key, nonce);
  // CCM must know the plaintext length before the AAD (Node requirement).
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Verify and decrypt ciphertext || tag; null when authentication fails (never throws for bad input). */
export function aeadOpen(alg: Algorithm, key: Buffer, nonce: Buffer, aad: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < AEAD_TAG_LENGTH) return null;
  const ct = sealed.subarray(0, sealed.length - AEAD_TAG_LENGTH);
  const tag = sealed.subarray(sealed.length - AEAD_TAG_LENGTH);
  try {
    const d = decipher(alg, key, nonce);
    d.setAuthTag(tag);
    d.setAAD(aad, { plaintextLength: ct.length });
    return Buffer.concat([d.update(ct), d.final()]);
  } catch {
    return null;
  }
}

/** One key's AEAD open, for every record under that key. */
export interface AeadOpener {
  /** Verify and decrypt ciphertext || tag; null when authentication fails (never throws for bad input). */
  open(nonce: Buffer, aad: Buffer, sealed: Buffer): Buffer | null;
  /** Drop the key material it holds; unusable afterwards. */
  wipe(): void;
}

/**
 * An opener for `key` (which the caller keeps and wipes): the addon's
 * OpenSSL context where the addon is loaded and the algorithm is GCM or
 * ChaCha20-Poly1305, else aeadOpen() per record (CCM; no addon).
 */
export function aeadOpener(alg: Algorithm, key: Buffer): AeadOpener {
  let ctx: NativeAeadOpener | null = null;
  if (alg !== 'aes-128-ccm' && nativeStatus().available) {
    try {
      ctx = native().createAeadOpener(alg, key);
    } catch {
      // OpenSSL refused the context (never seen): the per-record path below still opens.
    }
  }
  if (ctx) {
    const opener = ctx;
    return {
      open(nonce, aad, sealed) {
        if (sealed.length < AEAD_TAG_LENGTH) return null;
        const out = Buffer.allocUnsafe(sealed.length - AEAD_TAG_LENGTH);
        const n = opener.open(nonce, aad, sealed, out);
        if (n < 0) return null;
        return n === out.length ? out : out.subarray(0, n);
      },
      wipe: () => opener.wipe(),
    };
  }
  return {
    open: (nonce, aad, sealed) => aeadOpen(alg, key, nonce, aad, sealed),
    wipe() {},
  };
}
