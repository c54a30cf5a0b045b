// What a connection knows once its handshake is done (ConnectionFacts: ALPN,
// SNI, XFCC material, version, cipher), built by one function from either
// path's TlsFacts. Fronts read TLS facts from here and never from the stream:
// with kTLS the plaintext stream is not a TLSSocket.
import type net from 'node:net';
import type { PeerCertificateSummary, TlsFacts } from '../handshake/facts.js';
import type { TlsContexts } from '../tls/context.js';

export interface ConnectionFacts {
  /** Connection id, also in the connection's log line. */
  id: number;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** SNI the client sent, or '' when it sent none. */
  servername: string;
  /** Negotiated ALPN protocol, or '' when none was negotiated. */
  alpn: string;
  /** `TLSv1.2` / `TLSv1.3`. */
  tlsVersion: string;
  /** IANA cipher suite name (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`). */
  cipher: string;
  /** OpenSSL's name for the same suite (`ECDHE-RSA-AES128-GCM-SHA256`). */
  cipherOpenssl: string;
  /** SHA-256 hex of our own certificate that was served (XFCC `By=` is derived from it). */
  localCertHash: string;
  /** Subject of our served certificate, for XFCC `By=` when it has no URI SAN. */
  localCertBy: string;
  /** The client's certificate (XFCC), present only when it presented one that verified. */
  client?: PeerCertificateSummary;
  /** Whether the session was resumed (tickets / session ids). */
  resumed: boolean;
  /** monotonic ms (performance.now()) when the TCP connection was accepted. */
  acceptedAt: number;
  /** Where the record layer ended up; set once the record layer is chosen (proxy/connection/accept.ts openConnection). */
  ktls: 'on' | 'off';
}

/** What every connection knows before the handshake. */
export interface ConnectionOrigin {
  id: number;
  raw: net.Socket;
  remoteAddress: string;
  remotePort: number;
  acceptedAt: number;
}

/**
 * The facts of a finished handshake, from whichever path finished it (both
 * describe it as TlsFacts: proxy/handshake/facts.ts). The client identity is
 * there only when the client's certificate verified.
 */
export function connectionFacts(o: ConnectionOrigin, contexts: TlsContexts, f: TlsFacts): ConnectionFacts {
  const servername = f.servername ?? '';
  const served = contexts.lookup(servername).summary;
  return {
    id: o.id,
    remoteAddress: o.remoteAddress,
    remotePort: o.remotePort,
    localAddress: o.raw.localAddress ?? '',
    localPort: o.raw.localPort ?? 0,
    servername,
    alpn: f.alpn ?? '',
    tlsVersion: f.tlsVersion || 'none',
    cipher: f.ianaName ?? f.cipher,
    cipherOpenssl: f.cipher,
    localCertHash: served.sha256,
    localCertBy: served.uri,
    client: (f.authorized && f.peerCertificate) || undefined,
    resumed: f.resumed,
    acceptedAt: o.acceptedAt,
    ktls: 'off',
  };
}
