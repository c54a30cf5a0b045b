// The pipeline's HandshakeFacts (what fronts read: ALPN, SNI, XFCC material,
// version, cipher) built from either path's result: a Node TLSSocket, or the
// handshake engine's facts when the record layer was handed off (there is no
// TLSSocket to ask then).
import type net from 'node:net';
import type tls from 'node:tls';
import type { HandshakeFacts as EngineFacts, PeerCertificateSummary } from '../handshake/types.js';
import type { TlsContexts } from '../tls/context.js';
import type { ClientIdentity, HandshakeFacts } from './facts.js';
import { clientIdentity, sanEntries } from './handshake.js';

/** What every connection knows before the handshake. */
export interface ConnectionOrigin {
  id: number;
  raw: net.Socket;
  remoteAddress: string;
  remotePort: number;
  acceptedAt: number;
}

function base(o: ConnectionOrigin, contexts: TlsContexts, servername: string): Pick<
  HandshakeFacts,
  'id' | 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort' | 'localCertHash' | 'localCertBy' | 'acceptedAt' | 'ktls'
> {
  const served = contexts.lookup(servername).summary;
  return {
    id: o.id,
    remoteAddress: o.remoteAddress,
    remotePort: o.remotePort,
    localAddress: o.raw.localAddress ?? '',
    localPort: o.raw.localPort ?? 0,
    localCertHash: served.sha256,
    localCertBy: served.uri,
    acceptedAt: o.acceptedAt,
    ktls: 'off',
  };
}

/** Facts of a connection whose record layer is a Node TLSSocket. */
export function factsFromTlsSocket(o: ConnectionOrigin, contexts: TlsContexts, socket: tls.TLSSocket): HandshakeFacts {
  const cipher = socket.getCipher();
  const servername = typeof socket.servername === 'string' ? socket.servername : '';
  return {
    ...base(o, contexts, servername),
    servername,
    alpn: typeof socket.alpnProtocol === 'string' ? socket.alpnProtocol : '',
    tlsVersion: socket.getProtocol() ?? 'none',
    cipher: cipher.standardName || cipher.name,
    cipherOpenssl: cipher.name,
    client: clientIdentity(socket),
    resumed: socket.isSessionReused(),
  };
}

/** The XFCC identity from the engine's peer certificate summary (only when it verified). */
export function identityFromSummary(authorized: boolean, peer: PeerCertificateSummary | null): ClientIdentity | undefined {
  if (!authorized || !peer) return undefined;
  const san = peer.subjectAltName ?? '';
  return { subject: peer.subject, hash: peer.sha256, uris: sanEntries(san, 'URI:'), dns: sanEntries(san, 'DNS:') };
}

/** Facts of a handed-off connection, from the engine's HandshakeFacts. */
export function factsFromEngine(o: ConnectionOrigin, contexts: TlsContexts, f: EngineFacts): HandshakeFacts {
  const servername = f.servername ?? '';
  return {
    ...base(o, contexts, servername),
    servername,
    alpn: f.alpn ?? '',
    tlsVersion: f.tlsVersion || 'none',
    cipher: f.ianaName ?? f.cipher,
    cipherOpenssl: f.cipher,
    client: identityFromSummary(f.authorized, f.peerCertificate),
    resumed: f.resumed,
  };
}
