import t from 'tap';
import { hkdfExpandLabel, tls13NextTrafficSecret, tls13TrafficKeys } from '../../proxy/tls/hkdf.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 8448 section 3 ("Simple 1-RTT Handshake"), TLS_AES_128_GCM_SHA256.
const RFC8448 = {
  serverHandshakeSecret: 'b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38',
  serverHandshakeKey: '3fce516009c21727d0f2e4e86ee403bc',
  serverHandshakeIv: '5d313eb2671276ee13000b30',
  clientApplicationSecret: '9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5',
  clientApplicationKey: '17422dda596ed5d9acd890e3c63f5051',
  clientApplicationIv: '5b78923dee08579033e523d9',
  serverApplicationSecret: 'a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643',
  serverApplicationKey: '9f02283b6c9c07efc26bb9f2ac92e356',
  serverApplicationIv: 'cf782b88dd83549aadf1e984',
};

t.test('RFC 8448: client application traffic secret gives the published key and iv', (t) => {
  const k = tls13TrafficKeys('sha256', hex(RFC8448.clientApplicationSecret), 16);
  t.equal(k.key.toString('hex'), RFC8448.clientApplicationKey);
  t.equal(k.iv.toString('hex'), RFC8448.clientApplicationIv);
  t.end();
});

t.test('RFC 8448: server application traffic secret gives the published key and iv', (t) => {
  const k = tls13TrafficKeys('sha256', hex(RFC8448.serverApplicationSecret), 16);
  t.equal(k.key.toString('hex'), RFC8448.serverApplicationKey);
  t.equal(k.iv.toString('hex'), RFC8448.serverApplicationIv);
  t.end();
});

t.test('RFC 8448: server handshake traffic secret gives the published key and iv', (t) => {
  const k = tls13TrafficKeys('sha256', hex(RFC8448.serverHandshakeSecret), 16);
  t.equal(k.key.toString('hex'), RFC8448.serverHandshakeKey);
  t.equal(k.iv.toString('hex'), RFC8448.serverHandshakeIv);
  t.end();
});

t.test('"traffic upd" is HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)', (t) => {
  const secret = hex(RFC8448.serverApplicationSecret);
  const next = tls13NextTrafficSecret('sha256', secret);
  t.equal(next.length, 32);
  t.same(next, hkdfExpandLabel('sha256', secret, 'traffic upd', Buffer.alloc(0), 32));
  t.not(next.toString('hex'), secret.toString('hex'));
  const next384 = tls13NextTrafficSecret('sha384', Buffer.alloc(48, 7));
  t.equal(next384.length, 48, 'SHA-384 suites keep 48-byte secrets');
  t.end();
});

t.test('HKDF-Expand-Label rejects over-long output', (t) => {
  t.throws(() => hkdfExpandLabel('sha256', Buffer.alloc(32), 'key', Buffer.alloc(0), 255 * 32 + 1), RangeError);
  t.end();
});
