// NSS key-log lines, as Node's `keylog` event delivers them:
//   <LABEL> <client_random hex> <secret hex>\n
// Parsed straight from the Buffer (no JS string ever holds a secret), and
// only the labels the engine needs are kept. Then the secrets of one
// connection and the record protections the tracker derives from them. TLS
// 1.3 logs each traffic secret, which keys a direction directly (RFC 8446
// 7.3); TLS 1.2 logs only the master secret, expanded with both hello
// randoms into the key block (RFC 5246 6.3).

import type { KernelCipher } from '../../native/crypto-info.js';
import { tls12KeyBlock } from '../tls/prf.js';
import { RecordProtection } from '../tls/record-protection.js';
import { TlsWireError } from '../tls/records.js';
import { AEAD_PARAMS, type CipherSuite } from '../tls/suites.js';

export const KEYLOG_LABELS = [
  'CLIENT_RANDOM', // TLS 1.2 master secret
  'CLIENT_HANDSHAKE_TRAFFIC_SECRET',
  'SERVER_HANDSHAKE_TRAFFIC_SECRET',
  'CLIENT_TRAFFIC_SECRET_0',
  'SERVER_TRAFFIC_SECRET_0',
] as const;
export type KeylogLabel = (typeof KEYLOG_LABELS)[number];

export interface KeylogEntry {
  label: KeylogLabel;
  clientRandom: Buffer;
  secret: Buffer;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

function decodeHex(line: Buffer, from: number, to: number): Buffer | null {
  if ((to - from) % 2 !== 0) return null;
  const out = Buffer.alloc((to - from) / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexValue(line[from + 2 * i] ?? 0);
    const lo = hexValue(line[from + 2 * i + 1] ?? 0);
    if (hi < 0 || lo < 0) { out.fill(0); return null; }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/**
 * Parse one key-log line. Returns null for labels the engine does not use
 * (e.g. EXPORTER_SECRET) and for malformed lines.
 */
export function parseKeylogLine(line: Buffer): KeylogEntry | null {
  let end = line.length;
  while (end > 0 && (line[end - 1] === 0x0a || line[end - 1] === 0x0d || line[end - 1] === 0x20)) end--;
  const s1 = line.indexOf(0x20);
  if (s1 <= 0 || s1 >= end) return null;
  const s2 = line.indexOf(0x20, s1 + 1);
  if (s2 < 0 || s2 >= end) return null;
  const label = line.toString('latin1', 0, s1);
  if (!(KEYLOG_LABELS as readonly string[]).includes(label)) return null;
  const clientRandom = decodeHex(line, s1 + 1, s2);
  if (!clientRandom || clientRandom.length !== 32) return null;
  const secret = decodeHex(line, s2 + 1, end);
  if (!secret || ![32, 48].includes(secret.length)) { secret?.fill(0); return null; }
  return { label: label as KeylogLabel, clientRandom, secret };
}

export class HandshakeSecrets {
  /** From the ClientHello: the key-log lines of this connection carry it. */
  clientRandom: Buffer | null = null;
  /** From the (real, non-HRR) ServerHello: TLS 1.2 key expansion needs it. */
  serverRandom: Buffer | null = null;
  private readonly byLabel = new Map<KeylogLabel, Buffer>();

  /** Store a key-log secret (ownership of entry.secret passes here). */
  add(entry: KeylogEntry): void {
    if (this.clientRandom && !entry.clientRandom.equals(this.clientRandom)) {
      entry.secret.fill(0);
      throw new TlsWireError('key-log line for a different client random');
    }
    this.byLabel.get(entry.label)?.fill(0);
    this.byLabel.set(entry.label, entry.secret);
  }

  has(label: KeylogLabel): boolean {
    return this.byLabel.has(label);
  }

  /** A TLS 1.3 direction keyed by one traffic secret, at sequence 0; null until it is logged. */
  tls13(label: KeylogLabel, cipher: KernelCipher | null): RecordProtection | null {
    const secret = this.byLabel.get(label);
    return secret && cipher ? RecordProtection.tls13(cipher, secret) : null;
  }

  /** A TLS 1.2 direction from the master secret, at sequence 0; null until everything it needs is known. */
  tls12(side: 'client' | 'server', suite: CipherSuite | null, cipher: KernelCipher | null): RecordProtection | null {
    const master = this.byLabel.get('CLIENT_RANDOM');
    if (!master || !suite || !cipher || !this.clientRandom || !this.serverRandom) return null;
    const p = AEAD_PARAMS[cipher];
    const kb = tls12KeyBlock(suite.hash, master, this.clientRandom, this.serverRandom, p.keyLength, p.tls12FixedIvLength);
    const prot = RecordProtection.tls12({
      cipher,
      key: side === 'client' ? kb.clientWriteKey : kb.serverWriteKey,
      writeIv: side === 'client' ? kb.clientWriteIv : kb.serverWriteIv,
      seq: 0n,
      explicitNonce: null,
    });
    for (const b of [kb.clientWriteKey, kb.serverWriteKey, kb.clientWriteIv, kb.serverWriteIv]) b.fill(0);
    return prot;
  }

  wipe(): void {
    for (const s of this.byLabel.values()) s.fill(0);
    this.byLabel.clear();
  }
}
