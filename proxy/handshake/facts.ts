// HandshakeFacts from a finished tls.TLSSocket (documented getters only) and
// the tracker's view of the wire.

import { createHash } from 'node:crypto';
import type tls from 'node:tls';
import { suiteByName } from '../tls/suites.js';
import type { HandshakeCounts, HandshakeFacts, PeerCertificateSummary } from './types.js';

function dn(text: string): string {
  return text.split('\n').filter(Boolean).join(',');
}

export function peerCertificateSummary(tlsSocket: tls.TLSSocket): PeerCertificateSummary | null {
  const cert = tlsSocket.getPeerX509Certificate();
  if (!cert) return null;
  return {
    subject: dn(cert.subject),
    issuer: dn(cert.issuer),
    fingerprint256: cert.fingerprint256,
    sha256: createHash('sha256').update(cert.raw).digest('hex'),
    subjectAltName: cert.subjectAltName ?? null,
    pem: cert.toString(),
  };
}

export interface WireFacts {
  alpn: string | null;
  servername: string | null;
  helloRetryRequest: boolean;
}

export function collectFacts(tlsSocket: tls.TLSSocket, wire: WireFacts, counts: HandshakeCounts): HandshakeFacts {
  const cipher = tlsSocket.getCipher()?.name ?? '';
  const suite = suiteByName(cipher);
  const alpn = tlsSocket.alpnProtocol;
  const servername = (tlsSocket as { servername?: string | false | null }).servername;
  return {
    tlsVersion: tlsSocket.getProtocol() ?? '',
    cipher,
    ianaName: suite?.ianaName ?? null,
    kernelCipher: suite?.kernelCipher ?? null,
    alpn: typeof alpn === 'string' && alpn ? alpn : wire.alpn,
    servername: typeof servername === 'string' && servername ? servername : wire.servername,
    resumed: tlsSocket.isSessionReused(),
    helloRetryRequest: wire.helloRetryRequest,
    authorized: tlsSocket.authorized,
    authorizationError: tlsSocket.authorizationError ? String(tlsSocket.authorizationError) : null,
    peerCertificate: peerCertificateSummary(tlsSocket),
    counts,
  };
}
