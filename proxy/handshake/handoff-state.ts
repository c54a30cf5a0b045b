// The tracker's per-direction record state, and the exact state of both
// directions it hands off once OpenSSL is quiet after the handshake: the
// key, IV and sequence number of the next record each way, verified against
// what was actually on the wire.

import type tls from 'node:tls';
import type { CryptoInfo, KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { ContentType, HandshakeType } from '../tls/control.js';
import { RecordProtection } from '../tls/record-protection.js';
import { HandshakeReassembler, type TlsRecord, TlsWireError } from '../tls/records.js';
import { AEAD_PARAMS, type CipherSuite } from '../tls/suites.js';
import type { HandshakeSecrets } from './secrets.js';

export type DirectionPhase = 'plain' | 'hs13' | 'app13' | 'enc12';

export class DirectionState {
  phase: DirectionPhase = 'plain';
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

export interface FinalState {
  tx: RecordProtection;
  rx: RecordProtection;
}

/** What the tracker knows when the hand-off asks for the final state. */
export interface TrackedHandshake {
  readonly version: TlsVersion | null;
  readonly suite: CipherSuite | null;
  readonly kernelCipher: KernelCipher | null;
  readonly secrets: HandshakeSecrets;
  readonly inbound: DirectionState;
  readonly outbound: DirectionState;
  /** Server records still waiting for a key. */
  readonly outboundPending: number;
  /** TLS 1.2 client Finished records, fed before their key was known: verified here. */
  readonly lagging: readonly TlsRecord[];
}

/**
 * The exact state of both directions. Throws TlsWireError when anything does
 * not add up. The caller owns (and must wipe) the returned protections.
 */
export function finalState(h: TrackedHandshake): FinalState {
  const { kernelCipher, outbound, inbound } = h;
  if (!kernelCipher || !h.suite) throw new TlsWireError('no offloadable suite negotiated');
  if (h.outboundPending) throw new TlsWireError('server records still waiting for a key');
  if (!outbound.hs.empty) throw new TlsWireError('partial handshake message from the engine');
  if (h.version === 'TLSv1.3') {
    if (outbound.phase !== 'app13' || inbound.phase !== 'app13') throw new TlsWireError('not at the application phase');
    // TX continues right after the last record the engine sent (tickets).
    const tx = outbound.prot ?? h.secrets.tls13('SERVER_TRAFFIC_SECRET_0', kernelCipher);
    outbound.prot = null;
    // RX: the engine never saw a record under the client application key.
    const rx = h.secrets.tls13('CLIENT_TRAFFIC_SECRET_0', kernelCipher);
    if (!tx || !rx) {
      tx?.wipe();
      rx?.wipe();
      throw new TlsWireError('TLS 1.3 application secrets missing');
    }
    return { tx, rx };
  }
  if (h.version === 'TLSv1.2') {
    if (outbound.phase !== 'enc12' || !outbound.finished) throw new TlsWireError('server Finished not seen');
    if (inbound.phase !== 'enc12' || !inbound.finished) throw new TlsWireError('client Finished not seen');
    const tx = outbound.prot;
    const rx = h.secrets.tls12('client', h.suite, kernelCipher);
    if (!tx || !rx) throw new TlsWireError('TLS 1.2 master secret missing');
    outbound.prot = null;
    for (const rec of h.lagging) {
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
      const last = outbound.lastExplicitNonce;
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

function nonceBytes(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n & 0xffff_ffff_ffff_ffffn);
  return b;
}

/** Both directions as the kernel (or the JS record layer) takes them, plus the TLS 1.3 secrets KeyUpdate needs. */
export interface HandoffKeys {
  tx: CryptoInfo;
  rx: CryptoInfo;
  txSecret?: Buffer;
  rxSecret?: Buffer;
}

/**
 * The tracker's final state, checked against what OpenSSL itself reports
 * (suite and version); or why there is no exact state to hand off. Every
 * intermediate key is wiped; the caller owns the returned secrets.
 */
export function handoffKeys(
  tracker: { finalState(): FinalState; readonly negotiation: { suite: CipherSuite | null; version: TlsVersion | null } },
  tlsSocket: tls.TLSSocket,
): HandoffKeys | 'handoff_verify_failed' | 'tracker_desync' {
  let state: FinalState;
  try {
    state = tracker.finalState();
  } catch {
    return 'handoff_verify_failed';
  }
  const n = tracker.negotiation;
  try {
    if (tlsSocket.getCipher()?.name !== n.suite?.opensslName || tlsSocket.getProtocol() !== n.version) return 'tracker_desync';
    const txSecret = state.tx.trafficSecret() ?? undefined;
    const rxSecret = state.rx.trafficSecret() ?? undefined;
    return {
      tx: state.tx.toCryptoInfo(),
      rx: state.rx.toCryptoInfo(),
      ...(txSecret ? { txSecret } : {}),
      ...(rxSecret ? { rxSecret } : {}),
    };
  } finally {
    state.tx.wipe();
    state.rx.wipe();
  }
}
