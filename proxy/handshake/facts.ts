// What a finished handshake is known by, read from a tls.TLSSocket through
// documented getters only. Both handshake paths end with a TLSSocket (the
// Node fast path keeps it; the engine reads its own before the hand-off
// drops it), so both describe a connection with `tlsFactsOf`.

import { createHash } from 'node:crypto';
import type tls from 'node:tls';
import type { KernelCipher } from '../../native/crypto-info.js';
import { distinguishedName } from '../tls/certs.js';
import { suiteByName } from '../tls/suites.js';
import type { NegotiatedFacts } from './engine.js';
import type { Negotiation } from './tracker.js';

/** The client certificate: what logs, the mTLS check and XFCC (`Hash=`, `Subject=`, `URI=`, `DNS=`) use. */
export interface PeerCertificateSummary {
  /** Subject DN, one `key=value` per RDN joined by ',' (tls/certs.ts `distinguishedName`). */
  readonly subject: string;
  readonly issuer: string;
  /** SHA-256 of the DER, lowercase hex without separators (XFCC `Hash=`). */
  readonly sha256: string;
  /** URI SANs, usually SPIFFE IDs (XFCC `URI=`). */
  readonly uris: readonly string[];
  /** DNS SANs (XFCC `DNS=`). */
  readonly dns: readonly string[];
  /** The leaf certificate in PEM (XFCC `Cert=`). */
  readonly pem: string;
}

/** What any finished handshake is known by. */
export interface TlsFacts {
  /** `TLSv1.3`, `TLSv1.2`, or an older version on a userspace connection. */
  readonly tlsVersion: string;
  /** OpenSSL name, as `getCipher().name` reports it. */
  readonly cipher: string;
  /** IANA name, or null for a suite neither our table nor OpenSSL names. */
  readonly ianaName: string | null;
  readonly kernelCipher: KernelCipher | null;
  readonly alpn: string | null;
  readonly servername: string | null;
  /** PSK (TLS 1.3) or abbreviated (TLS 1.2) handshake. */
  readonly resumed: boolean;
  /** Client certificate verified against the server's CA (only meaningful with requestCert). */
  readonly authorized: boolean;
  readonly authorizationError: string | null;
  /** The certificate the client presented (verified or not: see `authorized`), or null. */
  readonly peerCertificate: PeerCertificateSummary | null;
}

/** The values of one kind of subjectAltName entry (`URI:`, `DNS:`) in Node's `a:b, c:d` rendering. */
function sanEntries(san: string, prefix: string): string[] {
  return san
    .split(/,\s*/)
    .filter((s) => s.startsWith(prefix))
    .map((s) => s.slice(prefix.length));
}

export function peerCertificateOf(tlsSocket: tls.TLSSocket): PeerCertificateSummary | null {
  const cert = tlsSocket.getPeerX509Certificate();
  if (!cert) return null;
  const san = cert.subjectAltName ?? '';
  return {
    subject: distinguishedName(cert.subject),
    issuer: distinguishedName(cert.issuer),
    sha256: createHash('sha256').update(cert.raw).digest('hex'),
    uris: sanEntries(san, 'URI:'),
    dns: sanEntries(san, 'DNS:'),
    pem: cert.toString(),
  };
}

/**
 * The facts of a finished handshake. `wire`: what the engine read on the wire,
 * used when the socket does not report it (a TLSSocket over a JS Duplex
 * leaves `servername` unset).
 */
export function tlsFactsOf(tlsSocket: tls.TLSSocket, wire?: { alpn: string | null; servername: string | null }): TlsFacts {
  const cipher = tlsSocket.getCipher();
  const name = cipher?.name ?? '';
  const suite = suiteByName(name);
  const alpn = tlsSocket.alpnProtocol;
  const servername = (tlsSocket as { servername?: string | false | null }).servername;
  return {
    tlsVersion: tlsSocket.getProtocol() ?? '',
    cipher: name,
    ianaName: suite?.ianaName ?? (cipher?.standardName || null),
    kernelCipher: suite?.kernelCipher ?? null,
    alpn: typeof alpn === 'string' && alpn ? alpn : wire?.alpn ?? null,
    servername: typeof servername === 'string' && servername ? servername : wire?.servername ?? null,
    resumed: tlsSocket.isSessionReused(),
    authorized: tlsSocket.authorized,
    authorizationError: tlsSocket.authorizationError ? String(tlsSocket.authorizationError) : null,
    peerCertificate: peerCertificateOf(tlsSocket),
  };
}

/** What offload() is asked with, from the tracker's view of the server flight; null when the kernel could not hold the suite. */
export function negotiatedFacts(n: Negotiation): NegotiatedFacts | null {
  if (!n.version || !n.suite || !n.kernelCipher) return null;
  return {
    tlsVersion: n.version,
    cipher: n.suite.opensslName,
    ianaName: n.suite.ianaName,
    kernelCipher: n.kernelCipher,
    alpn: n.alpn,
    servername: n.servername,
    resumed: n.resumed,
  };
}
