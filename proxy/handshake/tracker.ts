// Follows both directions of one TLS handshake from the record stream plus
// the key-log secrets, decrypting every protected handshake record it can.
// It answers three questions for the engine:
//   - inbound: is this record the one that carries the client's Finished?
//     (the last record the TLS engine may ever see)
//   - outbound: how many records has the server sent under its current key,
//     and with which explicit nonce (TLS 1.2 GCM/CCM)? → exact TX state
//   - what was negotiated (version, suite, ALPN, SNI, resumption, HRR)?
// It never assumes counts (tickets, record splits, nonce policy): it counts.

import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { AlertDescription, ContentType, HandshakeType } from '../tls/control.js';
import { tls12KeyBlock } from '../tls/prf.js';
import { RecordProtection } from '../tls/record-protection.js';
import type { CipherSuite } from '../tls/suites.js';
import { AEAD_PARAMS, suiteByCode } from '../tls/suites.js';
import { TlsWireError } from './errors.js';
import type { HandshakeFailureReason } from './errors.js';
import { alpnFromEncryptedExtensions, clientRandomOf, parseClientHello, parseServerHello } from './hello.js';
import type { KeylogEntry, KeylogLabel } from './keylog.js';
import type { HandshakeMessage, TlsRecord } from './records.js';
import { HandshakeReassembler } from './records.js';

const TLS12 = 0x0303;
const TLS13 = 0x0304;
/** Rejected 0-RTT records skipped before the client flight; OpenSSL enforces max_early_data, this is a backstop. */
const MAX_SKIPPED_EARLY_RECORDS = 64;

type Phase = 'plain' | 'hs13' | 'app13' | 'enc12';

class DirectionState {
  phase: Phase = 'plain';
  prot: RecordProtection | null = null;
  readonly hs = new HandshakeReassembler();
  /** Records under the current protected phase's key. */
  protectedRecords = 0;
  finished = false;
  lastExplicitNonce: bigint | null = null;
  records = 0;

  wipe(): void {
    this.prot?.wipe();
    this.prot = null;
    this.hs.wipe();
  }
}

export type InboundVerdict = 'feed' | 'finished' | 'blocked';

/** What is known about the negotiation (all null until the ServerHello). */
export interface Negotiation {
  version: TlsVersion | null;
  /** Wire version code (0x0301.. for versions we do not offload). */
  versionCode: number | null;
  cipherCode: number | null;
  suite: CipherSuite | null;
  kernelCipher: KernelCipher | null;
  alpn: string | null;
  servername: string | null;
  resumed: boolean;
  helloRetryRequest: boolean;
  /** The real (non-HRR) ServerHello has been seen. */
  serverHello: boolean;
}

export interface FinalState {
  tx: RecordProtection;
  rx: RecordProtection;
}

export class HandshakeTracker {
  clientRandom: Buffer | null = null;
  private serverRandom: Buffer | null = null;
  private readonly secrets = new Map<KeylogLabel, Buffer>();
  private readonly inbound = new DirectionState();
  private readonly outbound = new DirectionState();
  private readonly outQueue: TlsRecord[] = [];
  private serverHelloDone = false;
  /** Lagging TLS 1.2 client records: fed before their key is known, verified at the end. */
  private readonly lagging: TlsRecord[] = [];
  readonly negotiation: Negotiation = {
    version: null, versionCode: null, cipherCode: null, suite: null, kernelCipher: null,
    alpn: null, servername: null, resumed: false, helloRetryRequest: false, serverHello: false,
  };
  earlyDataRecordsSkipped = 0;
  /** First fatal alert the server sent during the handshake, as a failure reason. */
  serverAlertReason: HandshakeFailureReason | null = null;
  /** The client sent an alert during the handshake. */
  clientAlert = false;

  /** Outbound records waiting for a key-log line. */
  get outboundPending(): number {
    return this.outQueue.length;
  }

  /** True once the server's Finished has gone out (TLS 1.3: before the client's; TLS 1.2 full: after). */
  get serverFinished(): boolean {
    return this.outbound.finished;
  }

  // ------------------------------------------------------------- key log

  /** Store a key-log secret of this connection (ownership of entry.secret passes here). */
  addSecret(entry: KeylogEntry): void {
    if (this.clientRandom && !entry.clientRandom.equals(this.clientRandom)) {
      entry.secret.fill(0);
      throw new TlsWireError('key-log line for a different client random');
    }
    this.secrets.get(entry.label)?.fill(0);
    this.secrets.set(entry.label, entry.secret);
    this.drainOutbound();
  }

  private tls13Protection(label: KeylogLabel): RecordProtection | null {
    const secret = this.secrets.get(label);
    const cipher = this.negotiation.kernelCipher;
    return secret && cipher ? RecordProtection.tls13(cipher, secret) : null;
  }

  private tls12Protection(side: 'client' | 'server'): RecordProtection | null {
    const master = this.secrets.get('CLIENT_RANDOM');
    const { suite, kernelCipher } = this.negotiation;
    if (!master || !suite || !kernelCipher || !this.clientRandom || !this.serverRandom) return null;
    const p = AEAD_PARAMS[kernelCipher];
    const kb = tls12KeyBlock(suite.hash, master, this.clientRandom, this.serverRandom, p.keyLength, p.tls12FixedIvLength);
    const prot = RecordProtection.tls12({
      cipher: kernelCipher,
      key: side === 'client' ? kb.clientWriteKey : kb.serverWriteKey,
      writeIv: side === 'client' ? kb.clientWriteIv : kb.serverWriteIv,
      seq: 0n,
      explicitNonce: null,
    });
    for (const b of [kb.clientWriteKey, kb.serverWriteKey, kb.clientWriteIv, kb.serverWriteIv]) b.fill(0);
    return prot;
  }

  // ------------------------------------------------------ server → client

  /** A complete record the engine wrote. Throws TlsWireError when the stream makes no sense. */
  onOutboundRecord(rec: TlsRecord): void {
    this.outbound.records++;
    // Copy: the engine's chunk may be reused by the caller after this returns.
    this.outQueue.push({ ...rec, header: Buffer.from(rec.header), payload: Buffer.from(rec.payload) });
    this.drainOutbound();
  }

  private drainOutbound(): void {
    while (this.outQueue.length) {
      const rec = this.outQueue[0] as TlsRecord;
      if (!this.processOutbound(rec)) return; // blocked on a key
      this.outQueue.shift();
    }
  }

  private onServerHello(msg: HandshakeMessage): void {
    const sh = parseServerHello(msg.body);
    const n = this.negotiation;
    n.versionCode = sh.version;
    n.cipherCode = sh.cipherSuite;
    if (sh.helloRetryRequest) {
      n.helloRetryRequest = true;
      return;
    }
    this.serverRandom = sh.random;
    n.serverHello = true;
    n.version = sh.version === TLS13 ? 'TLSv1.3' : sh.version === TLS12 ? 'TLSv1.2' : null;
    const suite = suiteByCode(sh.cipherSuite) ?? null;
    n.suite = suite;
    n.kernelCipher = suite && n.version && suite.version === n.version ? suite.kernelCipher : null;
    if (suite && n.version && suite.version !== n.version) throw new TlsWireError('suite does not match the version');
    if (sh.alpn !== null) n.alpn = sh.alpn;
    if (n.version === 'TLSv1.3') n.resumed = sh.pskAccepted;
  }

  private noteServerAlert(body: Buffer): void {
    const level = body[0];
    const desc = body[1];
    if (desc === undefined || this.serverAlertReason) return;
    const tls13 = this.negotiation.version === 'TLSv1.3';
    if (level === 2 || (tls13 && desc !== AlertDescription.CLOSE_NOTIFY && desc !== AlertDescription.USER_CANCELED)) {
      this.serverAlertReason = alertReason(desc);
    }
  }

  /** Returns false when the record needs a key that is not known yet. */
  private processOutbound(rec: TlsRecord): boolean {
    const d = this.outbound;
    if (d.phase === 'plain') {
      if (rec.type === ContentType.HANDSHAKE) {
        for (const m of d.hs.push(rec.payload)) {
          if (m.type === HandshakeType.SERVER_HELLO) this.onServerHello(m);
          if (m.type === HandshakeType.SERVER_HELLO_DONE) this.serverHelloDone = true;
        }
        return true;
      }
      if (rec.type === ContentType.CHANGE_CIPHER_SPEC) {
        if (this.negotiation.versionCode === TLS12) {
          if (!d.hs.empty) throw new TlsWireError('server ChangeCipherSpec inside a handshake message');
          d.phase = 'enc12';
          // Abbreviated handshake: the server's CCS comes before any ServerHelloDone.
          this.negotiation.resumed = !this.serverHelloDone;
        }
        return true; // TLS 1.3 middlebox-compatibility CCS: not protected, not counted
      }
      if (rec.type === ContentType.ALERT) {
        this.noteServerAlert(rec.payload);
        return true;
      }
      if (rec.type === ContentType.APPLICATION_DATA && this.negotiation.version === 'TLSv1.3') {
        d.phase = 'hs13';
        return this.processOutbound(rec);
      }
      throw new TlsWireError(`unexpected server record type ${rec.type} before encryption`);
    }
    if (rec.type === ContentType.CHANGE_CIPHER_SPEC && this.negotiation.version === 'TLSv1.3') return true;

    if (d.phase === 'hs13' || d.phase === 'app13') {
      d.prot ??= this.tls13Protection(d.phase === 'hs13' ? 'SERVER_HANDSHAKE_TRAFFIC_SECRET' : 'SERVER_TRAFFIC_SECRET_0');
      if (!d.prot) return false;
      const o = d.prot.open(rec.header, rec.payload);
      if (!o) throw new TlsWireError('server record does not decrypt with the key-log secret');
      d.protectedRecords++;
      let keyUpdate = false;
      if (o.type === ContentType.HANDSHAKE) {
        for (const m of d.hs.push(o.data)) {
          if (m.type === HandshakeType.ENCRYPTED_EXTENSIONS) {
            const alpn = alpnFromEncryptedExtensions(m.body);
            if (alpn !== null) this.negotiation.alpn = alpn;
          }
          if (d.phase === 'hs13' && m.type === HandshakeType.FINISHED) d.finished = true;
          if (d.phase === 'app13' && m.type === HandshakeType.KEY_UPDATE) keyUpdate = true;
        }
      } else if (o.type === ContentType.ALERT) {
        this.noteServerAlert(o.data);
      }
      o.data.fill(0);
      if (d.phase === 'hs13' && d.finished) {
        if (!d.hs.empty) throw new TlsWireError('server Finished not at a record boundary');
        d.prot.wipe();
        d.prot = null;
        d.phase = 'app13';
        d.protectedRecords = 0;
      } else if (keyUpdate) {
        d.prot.keyUpdate(); // OpenSSL does not do this on its own; followed anyway
      }
      return true;
    }

    if (d.phase === 'enc12') {
      d.prot ??= this.tls12Protection('server');
      if (!d.prot) return false;
      const o = d.prot.open(rec.header, rec.payload);
      if (!o) throw new TlsWireError('server record does not decrypt with the derived server_write_key');
      d.protectedRecords++;
      if (o.explicitNonce !== undefined) d.lastExplicitNonce = o.explicitNonce;
      if (o.type === ContentType.HANDSHAKE) {
        for (const m of d.hs.push(o.data)) if (m.type === HandshakeType.FINISHED) d.finished = true;
      } else if (o.type === ContentType.ALERT) {
        this.noteServerAlert(o.data);
      }
      o.data.fill(0);
      return true;
    }
    throw new TlsWireError('server record in an unknown phase');
  }

  // ------------------------------------------------------ client → server

  /**
   * Classify an inbound record BEFORE the engine sees it. 'blocked' means
   * "ask again after the next key-log line or server record" and leaves the
   * tracker unchanged; 'finished' marks the record carrying the client's
   * Finished; 'feed' anything else. Throws TlsWireError on nonsense.
   */
  classifyInbound(rec: TlsRecord): InboundVerdict {
    const d = this.inbound;
    const n = this.negotiation;
    if (d.phase === 'plain') {
      if (rec.type === ContentType.HANDSHAKE) {
        this.peekClientHello(rec.payload);
        for (const m of d.hs.push(rec.payload)) {
          if (m.type === HandshakeType.CLIENT_HELLO) n.servername = parseClientHello(m.body).servername;
        }
        d.records++;
        return 'feed';
      }
      if (rec.type === ContentType.CHANGE_CIPHER_SPEC) {
        if (n.versionCode === null) return 'blocked';
        if (n.versionCode === TLS12) d.phase = 'enc12';
        d.records++;
        return 'feed';
      }
      if (rec.type === ContentType.APPLICATION_DATA) {
        if (n.versionCode === null) return 'blocked';
        if (n.version === 'TLSv1.3') {
          d.phase = 'hs13';
          return this.classifyInbound(rec);
        }
        d.records++;
        return 'feed'; // the engine rejects it
      }
      if (rec.type === ContentType.ALERT) this.clientAlert = true;
      d.records++;
      return 'feed';
    }
    if (rec.type === ContentType.CHANGE_CIPHER_SPEC && n.version === 'TLSv1.3') {
      d.records++;
      return 'feed';
    }

    if (d.phase === 'hs13') {
      if (rec.type !== ContentType.APPLICATION_DATA) {
        if (rec.type === ContentType.ALERT) this.clientAlert = true;
        d.records++;
        return 'feed';
      }
      // The client handshake secret is logged while the server builds its
      // ServerHello; the ALPN is in EncryptedExtensions. Wait for the whole
      // server flight (it precedes the client's) so the facts are complete.
      if (!this.secrets.has('CLIENT_HANDSHAKE_TRAFFIC_SECRET') || !this.outbound.finished) return 'blocked';
      d.prot ??= this.tls13Protection('CLIENT_HANDSHAKE_TRAFFIC_SECRET');
      if (!d.prot) return 'blocked';
      const o = d.prot.open(rec.header, rec.payload);
      d.records++;
      if (!o) {
        if (d.protectedRecords === 0 && ++this.earlyDataRecordsSkipped <= MAX_SKIPPED_EARLY_RECORDS) {
          return 'feed'; // rejected 0-RTT data: OpenSSL skips it the same way
        }
        throw new TlsWireError('client handshake record does not decrypt');
      }
      d.protectedRecords++;
      if (o.type === ContentType.HANDSHAKE) {
        for (const m of d.hs.push(o.data)) if (m.type === HandshakeType.FINISHED) d.finished = true;
      } else if (o.type === ContentType.ALERT) {
        this.clientAlert = true;
      }
      o.data.fill(0);
      if (!d.finished) return 'feed';
      if (!d.hs.empty) throw new TlsWireError('client Finished not at a record boundary');
      d.prot.wipe();
      d.prot = null;
      d.phase = 'app13';
      return 'finished';
    }

    if (d.phase === 'enc12') {
      // The first protected client record after its CCS is its Finished. It
      // cannot be decrypted yet: OpenSSL logs CLIENT_RANDOM only when it
      // builds its own Finished, which in a full handshake comes after the
      // client's. Classify by structure now, verify by decryption in
      // finalState().
      d.records++;
      if (rec.type === ContentType.ALERT) {
        this.clientAlert = true;
        return 'feed';
      }
      this.lagging.push({ ...rec, header: Buffer.from(rec.header), payload: Buffer.from(rec.payload) });
      if (rec.type !== ContentType.HANDSHAKE) throw new TlsWireError('client sent data before its Finished');
      d.finished = true;
      return 'finished';
    }
    throw new TlsWireError(`client record after its Finished`);
  }

  private peekClientHello(payload: Buffer): void {
    const pending = this.inbound.hs.pending;
    const b = pending.length ? Buffer.concat([pending, payload]) : payload;
    if (b[0] !== HandshakeType.CLIENT_HELLO) return;
    const random = clientRandomOf(b.subarray(4));
    if (!random) return;
    if (!this.clientRandom) this.clientRandom = random;
    else if (!random.equals(this.clientRandom)) throw new TlsWireError('second ClientHello with a different random');
  }

  // --------------------------------------------------------------- final

  /**
   * The exact state of both directions once the engine is quiet after the
   * handshake. Throws TlsWireError when anything does not add up. The caller
   * owns (and must wipe) the returned protections.
   */
  finalState(): FinalState {
    const n = this.negotiation;
    const kernelCipher = n.kernelCipher;
    if (!kernelCipher || !n.suite) throw new TlsWireError('no offloadable suite negotiated');
    if (this.outQueue.length) throw new TlsWireError('server records still waiting for a key');
    if (!this.outbound.hs.empty) throw new TlsWireError('partial handshake message from the engine');
    if (n.version === 'TLSv1.3') {
      if (this.outbound.phase !== 'app13' || this.inbound.phase !== 'app13') throw new TlsWireError('not at the application phase');
      // TX continues right after the last record the engine sent (tickets).
      const tx = this.outbound.prot ?? this.tls13Protection('SERVER_TRAFFIC_SECRET_0');
      this.outbound.prot = null;
      // RX: the engine never saw a record under the client application key.
      const rx = this.tls13Protection('CLIENT_TRAFFIC_SECRET_0');
      if (!tx || !rx) {
        tx?.wipe();
        rx?.wipe();
        throw new TlsWireError('TLS 1.3 application secrets missing');
      }
      return { tx, rx };
    }
    if (n.version === 'TLSv1.2') {
      if (this.outbound.phase !== 'enc12' || !this.outbound.finished) throw new TlsWireError('server Finished not seen');
      if (this.inbound.phase !== 'enc12' || !this.inbound.finished) throw new TlsWireError('client Finished not seen');
      const tx = this.outbound.prot;
      const rx = this.tls12Protection('client');
      if (!tx || !rx) throw new TlsWireError('TLS 1.2 master secret missing');
      this.outbound.prot = null;
      for (const rec of this.lagging) {
        const o = rx.open(rec.header, rec.payload);
        const ok = o !== null && o.type === ContentType.HANDSHAKE && o.data[0] === HandshakeType.FINISHED && o.data.length === 16;
        o?.data.fill(0);
        if (!ok) {
          tx.wipe();
          rx.wipe();
          throw new TlsWireError('client Finished does not verify with the derived client_write_key');
        }
      }
      if (AEAD_PARAMS[kernelCipher].tls12ExplicitNonceLength) {
        // OpenSSL starts the explicit nonce at a random value and counts up;
        // the next one is the last seen + 1 (what OpenSSL's own kTLS passes).
        const last = this.outbound.lastExplicitNonce;
        if (last === null) {
          tx.wipe();
          rx.wipe();
          throw new TlsWireError('no server explicit nonce observed');
        }
        const state = RecordProtection.fromCryptoInfo({ ...tx.toCryptoInfo(), iv: nonceBytes(last + 1n) });
        tx.wipe();
        return { tx: state, rx };
      }
      return { tx, rx };
    }
    throw new TlsWireError('version not offloadable');
  }

  /** Zero every secret and key this tracker holds. */
  wipe(): void {
    for (const s of this.secrets.values()) s.fill(0);
    this.secrets.clear();
    this.inbound.wipe();
    this.outbound.wipe();
    for (const r of this.lagging) r.payload.fill(0);
    this.lagging.length = 0;
    this.outQueue.length = 0;
  }
}

function nonceBytes(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n & 0xffff_ffff_ffff_ffffn);
  return b;
}

/** Failure reason for a fatal alert the server (OpenSSL) sent during the handshake. */
export function alertReason(description: number): HandshakeFailureReason {
  switch (description) {
    case 40: return 'no_shared_cipher'; // handshake_failure: OpenSSL's answer to no shared cipher/group
    case 70: return 'unsupported_version'; // protocol_version
    case 42: case 43: case 44: case 45: case 46: case 48: case 116: return 'client_cert_rejected';
    default: return 'protocol_error';
  }
}
