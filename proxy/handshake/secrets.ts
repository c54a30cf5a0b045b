// The key-log secrets of one connection and the record protections the
// tracker derives from them. TLS 1.3 logs each traffic secret, which keys a
// direction directly (RFC 8446 7.3); TLS 1.2 logs only the master secret,
// expanded with both hello randoms into the key block (RFC 5246 6.3).

import type { KernelCipher } from '../../native/crypto-info.js';
import { tls12KeyBlock } from '../tls/prf.js';
import { RecordProtection } from '../tls/record-protection.js';
import { TlsWireError } from '../tls/records.js';
import { AEAD_PARAMS, type CipherSuite } from '../tls/suites.js';
import type { KeylogEntry, KeylogLabel } from './keylog.js';

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
