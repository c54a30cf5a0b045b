// TLS 1.3 key schedule pieces the record layer needs (RFC 8446 7.1-7.3):
// HKDF-Expand-Label, traffic key/iv from a traffic secret, and the KeyUpdate
// step application_traffic_secret_N+1. Extract is never needed: the secrets
// come from the key log already extracted.

import { hmac } from './hmac.js';
import type { HashName } from './suites.js';
import { HASH_LENGTH } from './suites.js';

/** RFC 5869 HKDF-Expand. Node's hkdfSync always runs Extract first, so it cannot be used here. */
function hkdfExpand(hash: HashName, prk: Buffer, info: Buffer, length: number): Buffer {
  const hashLen = HASH_LENGTH[hash];
  if (!Number.isInteger(length) || length < 0 || length > 255 * hashLen) {
    throw new RangeError(`HKDF-Expand length ${length} out of range`);
  }
  const out = Buffer.alloc(Math.ceil(length / hashLen) * hashLen);
  let prev: Buffer = Buffer.alloc(0);
  for (let i = 0; i * hashLen < length; i++) {
    const block = hmac(hash, prk, prev, info, Buffer.from([i + 1]));
    block.copy(out, i * hashLen);
    prev.fill(0);
    prev = block;
  }
  prev.fill(0);
  const result = Buffer.from(out.subarray(0, length));
  out.fill(0);
  return result;
}

/** RFC 8446 7.1 HKDF-Expand-Label(Secret, Label, Context, Length); `label` without the "tls13 " prefix. */
export function hkdfExpandLabel(hash: HashName, secret: Buffer, label: string, context: Buffer, length: number): Buffer {
  const fullLabel = Buffer.from(`tls13 ${label}`, 'ascii');
  if (fullLabel.length > 255 || context.length > 255) throw new RangeError('HKDF label or context too long');
  const info = Buffer.alloc(2 + 1 + fullLabel.length + 1 + context.length);
  info.writeUInt16BE(length, 0);
  info[2] = fullLabel.length;
  fullLabel.copy(info, 3);
  info[3 + fullLabel.length] = context.length;
  context.copy(info, 4 + fullLabel.length);
  return hkdfExpand(hash, secret, info, length);
}

const EMPTY = Buffer.alloc(0);

/** RFC 8446 7.3: [sender]_write_key / _write_iv (12 bytes, RFC 8446 5.3) from a traffic secret. */
export function tls13TrafficKeys(hash: HashName, secret: Buffer, keyLength: number): { key: Buffer; iv: Buffer } {
  return {
    key: hkdfExpandLabel(hash, secret, 'key', EMPTY, keyLength),
    iv: hkdfExpandLabel(hash, secret, 'iv', EMPTY, 12),
  };
}

/** RFC 8446 7.2: application_traffic_secret_N+1 (KeyUpdate). */
export function tls13NextTrafficSecret(hash: HashName, secret: Buffer): Buffer {
  return hkdfExpandLabel(hash, secret, 'traffic upd', EMPTY, HASH_LENGTH[hash]);
}
