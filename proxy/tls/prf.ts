// TLS 1.2 PRF (RFC 5246 5) and the key block split (RFC 5246 6.3) for the
// AEAD suites: MAC keys are zero-length, so the block is
// client_write_key | server_write_key | client_write_IV | server_write_IV.

import { hmac } from './hmac.js';
import type { HashName } from './suites.js';

/** RFC 5246 5: PRF(secret, label, seed) = P_<hash>(secret, label + seed). */
export function tls12Prf(hash: HashName, secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, 'ascii'), seed]);
  const out = Buffer.alloc(length);
  let a: Buffer = labelSeed; // A(0)
  let got = 0;
  while (got < length) {
    const next = hmac(hash, secret, a); // A(i)
    if (a !== labelSeed) a.fill(0);
    a = next;
    const block = hmac(hash, secret, a, labelSeed);
    got += block.copy(out, got, 0, Math.min(block.length, length - got));
    block.fill(0);
  }
  a.fill(0);
  return out;
}

/**
 * RFC 5246 6.3 key block for an AEAD suite. The four results are separate
 * copies; the block itself is zeroed before returning.
 */
export function tls12KeyBlock(
  hash: HashName,
  masterSecret: Buffer,
  clientRandom: Buffer,
  serverRandom: Buffer,
  keyLength: number,
  fixedIvLength: number,
): Record<'clientWriteKey' | 'serverWriteKey' | 'clientWriteIv' | 'serverWriteIv', Buffer> {
  if (clientRandom.length !== 32 || serverRandom.length !== 32) throw new RangeError('randoms must be 32 bytes');
  const kl = keyLength;
  const il = fixedIvLength;
  const block = tls12Prf(hash, masterSecret, 'key expansion', Buffer.concat([serverRandom, clientRandom]), 2 * kl + 2 * il);
  const part = (from: number, len: number): Buffer => Buffer.from(block.subarray(from, from + len));
  const result = {
    clientWriteKey: part(0, kl),
    serverWriteKey: part(kl, kl),
    clientWriteIv: part(2 * kl, il),
    serverWriteIv: part(2 * kl + il, il),
  };
  block.fill(0);
  return result;
}
