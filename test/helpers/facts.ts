// ConnectionFacts (proxy/connection/facts.ts) for fronts driven without a
// handshake: a plain socket stands in for the decrypted stream, so the
// addresses come from it and the TLS facts are fixed, plausible values.
import type { ConnectionFacts } from '../../proxy/connection/facts.js';

/** The socket fields the facts take their addresses from (a net.Socket has them). */
export interface SocketAddresses {
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
}

export function factsFor(socket: SocketAddresses, overrides: Partial<ConnectionFacts> = {}): ConnectionFacts {
  return {
    id: 1,
    remoteAddress: socket.remoteAddress ?? '',
    remotePort: socket.remotePort ?? 0,
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
    servername: 'localhost',
    alpn: '',
    tlsVersion: 'TLSv1.3',
    cipher: 'TLS_AES_128_GCM_SHA256',
    cipherOpenssl: 'TLS_AES_128_GCM_SHA256',
    localCertHash: '00',
    localCertBy: 'CN=localhost',
    resumed: false,
    acceptedAt: 0,
    ktls: 'off',
    ...overrides,
  };
}
