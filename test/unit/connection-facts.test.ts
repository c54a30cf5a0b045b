// One function builds what fronts read (ConnectionFacts) from either
// handshake path's TlsFacts: the served certificate by SNI, the IANA suite
// name, and a client identity only when the client's certificate verified.
import t from 'tap';
import type net from 'node:net';
import { connectionFacts } from '../../proxy/connection/facts.js';
import type { TlsFacts } from '../../proxy/handshake/facts.js';
import type { TlsContexts } from '../../proxy/tls/context.js';

const contexts = {
  lookup: (servername: string) => ({ summary: { sha256: `hash-of-${servername || 'default'}`, uri: 'spiffe://us' } }),
} as unknown as TlsContexts;
const origin = { id: 3, raw: { localAddress: '127.0.0.1', localPort: 8443 } as net.Socket, remoteAddress: '10.0.0.1', remotePort: 5555, acceptedAt: 1 };
const peer = { subject: 'CN=client', issuer: 'CN=ca', sha256: 'abc', uris: ['spiffe://client'], dns: ['c.example'], pem: '-----BEGIN CERTIFICATE-----' };
const tls13: TlsFacts = {
  tlsVersion: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  ianaName: 'TLS_AES_128_GCM_SHA256',
  kernelCipher: null,
  alpn: 'h2',
  servername: 'a.example',
  resumed: true,
  authorized: true,
  authorizationError: null,
  peerCertificate: peer,
};

t.test('a verified client certificate becomes the XFCC identity; the served certificate follows SNI', (t) => {
  const f = connectionFacts(origin, contexts, tls13);
  t.match(f, { id: 3, remoteAddress: '10.0.0.1', remotePort: 5555, localAddress: '127.0.0.1', localPort: 8443, servername: 'a.example', alpn: 'h2' });
  t.match(f, { tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', localCertHash: 'hash-of-a.example', localCertBy: 'spiffe://us', resumed: true, ktls: 'off' });
  t.same(f.client, peer);
  t.end();
});

t.test('no identity from an unverified certificate; absent SNI/ALPN are empty; OpenSSL name when no IANA name', (t) => {
  const f = connectionFacts(origin, contexts, { ...tls13, authorized: false, servername: null, alpn: null, ianaName: null, cipher: 'ECDHE-RSA-AES128-GCM-SHA256', tlsVersion: '' });
  t.equal(f.client, undefined);
  t.match(f, { servername: '', alpn: '', localCertHash: 'hash-of-default', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', cipherOpenssl: 'ECDHE-RSA-AES128-GCM-SHA256', tlsVersion: 'none' });
  t.end();
});
