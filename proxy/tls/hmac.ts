// RFC 2104 HMAC over Node's one-shot `crypto.hash`, for the key schedules in
// hkdf.ts and prf.ts. Why not `createHmac`: every HMAC there is one short
// message, and a `Hmac` object per call (a native context wrapped in a JS
// stream object) cost about 4x two one-shot hashes on the dev host; a kTLS
// connection runs at least four of them while it is set up, and the lab's
// emulated CPU makes the object's JS weigh more still. The results are the
// same bytes (test/unit/tls-hmac.test.ts checks against `createHmac`).
//
// Key material: the padded key blocks and the inner digest are wiped before
// returning; only the MAC leaves.

import { hash } from 'node:crypto';
import { HASH_LENGTH, type HashName } from './suites.js';

/** Input block size of each hash (RFC 2104 "B"). */
const BLOCK: Readonly<Record<HashName, number>> = Object.freeze({ sha256: 64, sha384: 128 });
const IPAD = 0x36;
const OPAD = 0x5c;

function digest(alg: HashName, data: Buffer): Buffer {
  return hash(alg, data, 'buffer');
}

/** `block` bytes of (key XOR pad), key zero-padded, followed by room for `tail` bytes. */
function padded(key: Buffer, pad: number, block: number, tail: number): Buffer {
  const out = Buffer.allocUnsafeSlow(block + tail);
  out.fill(pad, 0, block);
  for (let i = 0; i < key.length; i++) out[i] = key[i]! ^ pad;
  return out;
}

/** HMAC-`alg`(key, parts concatenated). */
export function hmac(alg: HashName, key: Buffer, ...parts: Buffer[]): Buffer {
  const block = BLOCK[alg];
  // RFC 2104 2: a key longer than the block is hashed first (TLS secrets never are, but the function is general).
  const k = key.length > block ? digest(alg, key) : key;
  let length = 0;
  for (const p of parts) length += p.length;
  const inner = padded(k, IPAD, block, length);
  let at = block;
  for (const p of parts) at += p.copy(inner, at);
  const innerDigest = digest(alg, inner);
  inner.fill(0);
  const outer = padded(k, OPAD, block, HASH_LENGTH[alg]);
  innerDigest.copy(outer, block);
  innerDigest.fill(0);
  if (k !== key) k.fill(0);
  const mac = digest(alg, outer);
  outer.fill(0);
  return mac;
}
