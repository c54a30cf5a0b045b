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
import type { RecordProtection } from '../tls/record-protection.js';
import { type HandshakeMessage, HandshakeReassembler, type TlsRecord, TlsWireError } from '../tls/records.js';
import { type CipherSuite, suiteByCode } from '../tls/suites.js';
import { alpnFromEncryptedExtensions, clientHelloServername, clientRandomOf, parseServerHello } from './hello.js';
import { HandshakeSecrets, type KeylogEntry } from './keylog.js';

const TLS12 = 0x0303;
const TLS13 = 0x0304;
/** Rejected 0-RTT records skipped before the client flight; OpenSSL enforces max_early_data, this is a backstop. */
const MAX_SKIPPED_EARLY_RECORDS = 64;

export type InboundVerdict = 'feed' | 'finished' | 'blocked';

/** One direction's record state (handoff-state.ts reads it for the final state). */
export class DirectionState {
  phase: 'plain' | 'hs13' | 'app13' | 'enc12' = 'plain';
  prot: RecordProtection | null = null;
  readonly hs = new HandshakeReassembler();
  /** Inbound: records under the client handshake key (before the first, an undecryptable one is rejected 0-RTT). */
  protectedRecords = 0;
  finished = false;
  lastExplicitNonce: bigint | null = null;

  wipe(): void {
    this.prot?.wipe();
    this.prot = null;
    this.hs.wipe();
  }
}

/** What is known about the negotiation (all null until the ServerHello). */
export interface Negotiation {
  version: TlsVersion | null;
  /** Wire version code (0x0301.. for versions we do not offload). */
  versionCode: number | null;
  suite: CipherSuite | null;
  kernelCipher: KernelCipher | null;
  alpn: string | null;
  servername: string | null;
  resumed: boolean;
  helloRetryRequest: boolean;
  /** The real (non-HRR) ServerHello has been seen. */
  serverHello: boolean;
}

export class HandshakeTracker {
  readonly secrets = new HandshakeSecrets();
  readonly inbound = new DirectionState();
  readonly outbound = new DirectionState();
  private readonly outQueue: TlsRecord[] = [];
  private serverHelloDone = false;
  /** Lagging TLS 1.2 client records: fed before their key is known, verified at the end. */
  readonly lagging: TlsRecord[] = [];
  readonly negotiation: Negotiation = {
    version: null, versionCode: null, suite: null, kernelCipher: null,
    alpn: null, servername: null, resumed: false, helloRetryRequest: false, serverHello: false,
  };
  earlyDataRecordsSkipped = 0;
  /** Description of the first fatal alert the server sent during the handshake. */
  serverAlert: number | null = null;
  /** The client sent an alert during the handshake. */
  clientAlert = false;

  /** Outbound records waiting for a key-log line. */
  get outboundPending(): number {
    return this.outQueue.length;
  }

  /** Store a key-log secret of this connection (ownership of entry.secret passes here). */
  addSecret(entry: KeylogEntry): void {
    this.secrets.add(entry);
    this.drainOutbound();
  }

  /** A complete record the engine wrote. Throws TlsWireError when the stream makes no sense. */
  onOutboundRecord(rec: TlsRecord): void {
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
    if (sh.helloRetryRequest) {
      n.helloRetryRequest = true;
      return;
    }
    this.secrets.serverRandom = sh.random;
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
    if (desc === undefined || this.serverAlert !== null) return;
    const tls13 = this.negotiation.version === 'TLSv1.3';
    if (level === 2 || (tls13 && desc !== AlertDescription.CLOSE_NOTIFY && desc !== AlertDescription.USER_CANCELED)) {
      this.serverAlert = desc;
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

    const tls13 = d.phase !== 'enc12';
    d.prot ??= tls13
      ? this.secrets.tls13(d.phase === 'hs13' ? 'SERVER_HANDSHAKE_TRAFFIC_SECRET' : 'SERVER_TRAFFIC_SECRET_0', this.negotiation.kernelCipher)
      : this.secrets.tls12('server', this.negotiation.suite, this.negotiation.kernelCipher);
    if (!d.prot) return false;
    const o = d.prot.open(rec.header, rec.payload);
    if (!o) throw new TlsWireError(`server record does not decrypt with the ${tls13 ? 'key-log secret' : 'derived server_write_key'}`);
    if (o.explicitNonce !== undefined) d.lastExplicitNonce = o.explicitNonce;
    let keyUpdate = false;
    if (o.type === ContentType.HANDSHAKE) {
      for (const m of d.hs.push(o.data)) {
        if (tls13 && m.type === HandshakeType.ENCRYPTED_EXTENSIONS) {
          const alpn = alpnFromEncryptedExtensions(m.body);
          if (alpn !== null) this.negotiation.alpn = alpn;
        }
        if (d.phase !== 'app13' && m.type === HandshakeType.FINISHED) d.finished = true;
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
    } else if (keyUpdate) {
      d.prot.keyUpdate(); // OpenSSL does not do this on its own; followed anyway
    }
    return true;
  }

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
          if (m.type === HandshakeType.CLIENT_HELLO) n.servername = clientHelloServername(m.body);
        }
        return 'feed';
      }
      if (rec.type === ContentType.CHANGE_CIPHER_SPEC) {
        if (n.versionCode === null) return 'blocked';
        if (n.versionCode === TLS12) d.phase = 'enc12';
        return 'feed';
      }
      if (rec.type === ContentType.APPLICATION_DATA) {
        if (n.versionCode === null) return 'blocked';
        if (n.version === 'TLSv1.3') {
          d.phase = 'hs13';
          return this.classifyInbound(rec);
        }
        return 'feed'; // the engine rejects it
      }
      if (rec.type === ContentType.ALERT) this.clientAlert = true;
      return 'feed';
    }
    if (rec.type === ContentType.CHANGE_CIPHER_SPEC && n.version === 'TLSv1.3') return 'feed';

    if (d.phase === 'hs13') {
      if (rec.type !== ContentType.APPLICATION_DATA) {
        if (rec.type === ContentType.ALERT) this.clientAlert = true;
        return 'feed';
      }
      // The client handshake secret is logged while the server builds its
      // ServerHello; the ALPN is in EncryptedExtensions. Wait for the whole
      // server flight (it precedes the client's) so the facts are complete.
      if (!this.secrets.has('CLIENT_HANDSHAKE_TRAFFIC_SECRET') || !this.outbound.finished) return 'blocked';
      d.prot ??= this.secrets.tls13('CLIENT_HANDSHAKE_TRAFFIC_SECRET', n.kernelCipher);
      if (!d.prot) return 'blocked';
      const o = d.prot.open(rec.header, rec.payload);
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
      // handoff-state.ts.
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
    if (!this.secrets.clientRandom) this.secrets.clientRandom = random;
    else if (!random.equals(this.secrets.clientRandom)) throw new TlsWireError('second ClientHello with a different random');
  }

  /** Zero every secret and key this tracker holds. */
  wipe(): void {
    this.secrets.wipe();
    this.inbound.wipe();
    this.outbound.wipe();
    for (const r of this.lagging) r.payload.fill(0);
    this.lagging.length = 0;
    this.outQueue.length = 0;
  }
}
