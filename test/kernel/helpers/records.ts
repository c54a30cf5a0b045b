// Independent TLS record protection for the kernel tests: what the kernel must put on
// the wire (and accept from it) for a given crypto-info struct, built from node:crypto
// through proxy/tls/aead.ts. Formats: RFC 8446 5.2 (TLS 1.3), RFC 5288 / RFC 6655
// (TLS 1.2 GCM/CCM: salt || explicit nonce), RFC 7905 (TLS 1.2 ChaCha20: iv XOR seq).
import { AEAD_TAG_LENGTH, aeadOpen, aeadSeal, seqBytes, xorNonce } from '../../../proxy/tls/aead.js';
import { AEAD_PARAMS } from '../../../proxy/tls/suites.js';
import type { CryptoInfo, KernelCipher, TlsVersion } from '../../../native/crypto-info.js';

export const CONTENT = { alert: 21, handshake: 22, data: 23 } as const;

/** The fields of the kernel struct, kept by the test (setCryptoInfo wipes the Buffers it is given: hand it `cryptoInfo(k)`). */
export type KnownKeys = CryptoInfo;

/** Deterministic keys per combination ("known keys"), so a failure can be replayed by hand. */
export function knownKeys(version: TlsVersion, cipher: KernelCipher, variant = 0): KnownKeys {
  const p = AEAD_PARAMS[cipher];
  const fill = (n: number, base: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (base + variant * 0x40 + i) & 0xff));
  const chacha = cipher === 'CHACHA20_POLY1305';
  return {
    version,
    cipher,
    key: fill(p.keyLength, 0x10),
    iv: fill(chacha ? 12 : 8, 0xb0),
    salt: chacha ? Buffer.alloc(0) : fill(4, 0xa0),
    // A start sequence number with every byte different catches byte-order mistakes.
    recSeq: variant === 0 ? 0x0102030405060708n : 0n,
  };
}

/** A copy to hand to setCryptoInfo (which zeroes it). */
export function cryptoInfo(k: KnownKeys): CryptoInfo {
  return { version: k.version, cipher: k.cipher, key: Buffer.from(k.key), iv: Buffer.from(k.iv), salt: Buffer.from(k.salt), recSeq: k.recSeq };
}

function header(type: number, length: number): Buffer {
  return Buffer.from([type, 0x03, 0x03, length >> 8, length & 0xff]);
}

/** The 12-byte per-connection IV: salt || iv for GCM/CCM, iv for ChaCha20. */
function fullIv(k: KnownKeys): Buffer {
  return k.cipher === 'CHACHA20_POLY1305' ? k.iv : Buffer.concat([k.salt, k.iv]);
}

function tls12Aad(seq: bigint, type: number, length: number): Buffer {
  return Buffer.concat([seqBytes(seq), Buffer.from([type, 0x03, 0x03, length >> 8, length & 0xff])]);
}

/** Seals one record as the peer of a kTLS RX socket must. */
export function sealRecord(k: KnownKeys, seq: bigint, type: number, plaintext: Buffer): Buffer {
  const alg = AEAD_PARAMS[k.cipher].algorithm;
  if (k.version === 'TLSv1.3') {
    const inner = Buffer.concat([plaintext, Buffer.from([type])]);
    const hdr = header(CONTENT.data, inner.length + AEAD_TAG_LENGTH);
    return Buffer.concat([hdr, aeadSeal(alg, k.key, xorNonce(fullIv(k), seq), hdr, inner)]);
  }
  const aad = tls12Aad(seq, type, plaintext.length);
  if (k.cipher === 'CHACHA20_POLY1305') {
    const body = aeadSeal(alg, k.key, xorNonce(fullIv(k), seq), aad, plaintext);
    return Buffer.concat([header(type, body.length), body]);
  }
  const explicit = seqBytes(seq);
  const body = aeadSeal(alg, k.key, Buffer.concat([k.salt, explicit]), aad, plaintext);
  return Buffer.concat([header(type, 8 + body.length), explicit, body]);
}

export interface OpenedRecord {
  type: number;
  plaintext: Buffer;
  /** TLS 1.2 GCM/CCM: the explicit nonce the sender chose. */
  explicitNonce: Buffer | null;
}

/** Opens one whole record (header included) as the peer of a kTLS TX socket must; null = authentication failed. */
export function openRecord(k: KnownKeys, seq: bigint, record: Buffer): OpenedRecord | null {
  const alg = AEAD_PARAMS[k.cipher].algorithm;
  const hdr = record.subarray(0, 5);
  const body = record.subarray(5);
  if (k.version === 'TLSv1.3') {
    const inner = aeadOpen(alg, k.key, xorNonce(fullIv(k), seq), hdr, body);
    if (inner === null) return null;
    let end = inner.length;
    while (end > 0 && inner[end - 1] === 0) end--; // strip padding
    if (end === 0) return null;
    return { type: inner[end - 1] ?? 0, plaintext: inner.subarray(0, end - 1), explicitNonce: null };
  }
  const type = hdr[0] ?? 0;
  if (k.cipher === 'CHACHA20_POLY1305') {
    const pt = aeadOpen(alg, k.key, xorNonce(fullIv(k), seq), tls12Aad(seq, type, body.length - AEAD_TAG_LENGTH), body);
    return pt === null ? null : { type, plaintext: pt, explicitNonce: null };
  }
  const explicit = body.subarray(0, 8);
  const sealed = body.subarray(8);
  const pt = aeadOpen(alg, k.key, Buffer.concat([k.salt, explicit]), tls12Aad(seq, type, sealed.length - AEAD_TAG_LENGTH), sealed);
  return pt === null ? null : { type, plaintext: pt, explicitNonce: Buffer.from(explicit) };
}

/** Splits a byte stream into whole records; `rest` is an incomplete tail. */
export function splitRecords(buf: Buffer): { records: Buffer[]; rest: Buffer } {
  const records: Buffer[] = [];
  let off = 0;
  while (buf.length - off >= 5) {
    const len = buf.readUInt16BE(off + 3);
    if (buf.length - off < 5 + len) break;
    records.push(buf.subarray(off, off + 5 + len));
    off += 5 + len;
  }
  return { records, rest: buf.subarray(off) };
}
