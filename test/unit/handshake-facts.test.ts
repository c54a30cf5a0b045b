// tlsFactsOf / peerCertificateOf (proxy/handshake/facts.ts): what both
// handshake paths read from a finished TLSSocket, incl. the client
// certificate summary XFCC is built from.
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { tlsFactsOf } from '../../proxy/handshake/facts.js';
import { makePki } from '../helpers/pki.js';

const pki = makePki();
t.teardown(() => pki.cleanup());

async function handshake(clientCert: boolean): Promise<tls.TLSSocket> {
  const server = tls.createServer({
    cert: fs.readFileSync(pki.server.cert), key: fs.readFileSync(pki.server.key), ca: fs.readFileSync(pki.caCert),
    requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'], minVersion: 'TLSv1.3',
  });
  t.teardown(() => server.close());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<tls.TLSSocket>((r) => server.once('secureConnection', r));
  const c = tls.connect({
    port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername: 'localhost', ca: fs.readFileSync(pki.caCert),
    ALPNProtocols: ['h2'], ...(clientCert ? { cert: fs.readFileSync(pki.client.cert), key: fs.readFileSync(pki.client.key) } : {}),
  });
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  return got;
}

t.test('a verified client certificate: subject on one line, SHA-256 hex, URI and DNS SANs, PEM', async (t) => {
  const s = await handshake(true);
  const f = tlsFactsOf(s);
  t.equal(f.tlsVersion, 'TLSv1.3');
  t.equal(f.cipher, s.getCipher().name);
  t.equal(f.ianaName, s.getCipher().standardName);
  t.ok(f.kernelCipher, 'a TLS 1.3 AEAD suite has a kernel cipher');
  t.equal(f.alpn, 'h2');
  t.equal(f.servername, 'localhost');
  t.equal(f.resumed, false);
  t.equal(f.authorized, true);
  t.equal(f.authorizationError, null);
  const x = new X509Certificate(fs.readFileSync(pki.client.cert));
  t.same(f.peerCertificate, {
    subject: 'O=Tests,CN=client one',
    issuer: 'CN=Test CA',
    sha256: createHash('sha256').update(x.raw).digest('hex'),
    uris: ['spiffe://test/client'],
    dns: [],
    pem: x.toString(),
  });
});

t.test('no client certificate: null summary; the wire facts fill only what the socket lacks', async (t) => {
  const s = await handshake(false);
  const f = tlsFactsOf(s, { alpn: 'http/1.1', servername: 'other.example' });
  t.equal(f.peerCertificate, null);
  t.equal(f.authorized, false);
  t.equal(f.alpn, 'h2', 'the socket knows the ALPN');
  t.equal(f.servername, 'localhost', 'the socket knows the SNI');
});
