// The exact state of both directions the tracker hands off once OpenSSL is
// quiet after the handshake: the key, IV and sequence number of the next
// record each way, verified against what was actually on the wire.

import type tls from 'node:tls';
import { ContentType, HandshakeType } from '../tls/control.js';
import { RecordProtection } from '../tls/record-protection.js';
import { TlsWireError } from '../tls/records.js';
import { AEAD_PARAMS } from '../tls/suites.js';
import type { HandoffResult } from './engine.js';
import type { HandshakeTracker } from './tracker.js';

/**
 * The exact state of both directions. Throws TlsWireError when anything does
 * not add up. The caller owns (and must wipe) the returned protections.
 */
function finalState(h: HandshakeTracker): { tx: RecordProtection; rx: RecordProtection } {
  const { outbound, inbound } = h;
  const { kernelCipher, suite, version } = h.negotiation;
  if (!kernelCipher || !suite) throw new TlsWireError('no offloadable suite negotiated');
  if (h.outboundPending) throw new TlsWireError('server records still waiting for a key');
  if (!outbound.hs.empty) throw new TlsWireError('partial handshake message from the engine');
  if (version === 'TLSv1.3') {
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
  if (version === 'TLSv1.2') {
    if (outbound.phase !== 'enc12' || !outbound.finished) throw new TlsWireError('server Finished not seen');
    if (inbound.phase !== 'enc12' || !inbound.finished) throw new TlsWireError('client Finished not seen');
    const tx = outbound.prot;
    const rx = h.secrets.tls12('client', suite, kernelCipher);
    if (!tx || !rx) throw new TlsWireError('TLS 1.2 master secret missing');
    outbound.prot = null;
    try {
      for (const rec of h.lagging) {
        const o = rx.open(rec.header, rec.payload);
        const ok = o !== null && o.type === ContentType.HANDSHAKE && o.data[0] === HandshakeType.FINISHED && o.data.length === 16;
        o?.data.fill(0);
        if (!ok) throw new TlsWireError('client Finished does not verify with the derived client_write_key');
      }
      if (!AEAD_PARAMS[kernelCipher].tls12ExplicitNonceLength) return { tx, rx };
      // OpenSSL starts the explicit nonce at a random value and counts up;
      // the next one is the last seen + 1 (what OpenSSL's own kTLS passes).
      const last = outbound.lastExplicitNonce;
      if (last === null) throw new TlsWireError('no server explicit nonce observed');
      const iv = Buffer.alloc(8);
      iv.writeBigUInt64BE((last + 1n) & 0xffff_ffff_ffff_ffffn);
      const next = RecordProtection.fromCryptoInfo({ ...tx.toCryptoInfo(), iv });
      tx.wipe();
      return { tx: next, rx };
    } catch (err) {
      tx.wipe();
      rx.wipe();
      throw err;
    }
  }
  throw new TlsWireError('version not offloadable');
}

/**
 * Both directions as the kernel (or the JS record layer) takes them, plus the
 * TLS 1.3 secrets KeyUpdate needs: the tracker's final state, checked against
 * what OpenSSL itself reports (suite and version); or why there is no exact
 * state to hand off. Every intermediate key is wiped; the caller owns the
 * returned secrets.
 */
export function handoffKeys(
  tracker: HandshakeTracker,
  tlsSocket: tls.TLSSocket,
): Pick<HandoffResult, 'tx' | 'rx' | 'txSecret' | 'rxSecret'> | 'handoff_verify_failed' | 'tracker_desync' {
  let state: { tx: RecordProtection; rx: RecordProtection };
  try {
    state = finalState(tracker);
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
