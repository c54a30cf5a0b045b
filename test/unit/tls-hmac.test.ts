import t from 'tap';
import { createHmac, randomBytes } from 'node:crypto';
import { hmac } from '../../proxy/tls/hmac.js';

const ascii = (s: string): Buffer => Buffer.from(s, 'ascii');

// RFC 4231 4.2, 4.3 and 4.7 (test cases 1, 2 and 6: 6 has a key longer than either hash's block).
const RFC4231: { name: string; key: Buffer; data: Buffer; sha256: string; sha384: string }[] = [
  {
    name: 'test case 1',
    key: Buffer.alloc(20, 0x0b),
    data: ascii('Hi There'),
    sha256: 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7',
    sha384: 'afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6',
  },
  {
    name: 'test case 2',
    key: ascii('Jefe'),
    data: ascii('what do ya want for nothing?'),
    sha256: '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    sha384: 'af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649',
  },
  {
    name: 'test case 6 (key longer than the block)',
    key: Buffer.alloc(131, 0xaa),
    data: ascii('Test Using Larger Than Block-Size Key - Hash Key First'),
    sha256: '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
    sha384: '4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952',
  },
];

t.test('RFC 4231 vectors, SHA-256 and SHA-384', (t) => {
  for (const v of RFC4231) {
    t.equal(hmac('sha256', v.key, v.data).toString('hex'), v.sha256, `${v.name}, sha256`);
    t.equal(hmac('sha384', v.key, v.data).toString('hex'), v.sha384, `${v.name}, sha384`);
  }
  t.end();
});

t.test('the same bytes as createHmac for keys of every length around both block sizes, parts split anywhere', (t) => {
  for (const alg of ['sha256', 'sha384'] as const) {
    for (const keyLength of [0, 1, 31, 32, 48, 63, 64, 65, 127, 128, 129, 300]) {
      const key = randomBytes(keyLength);
      const data = randomBytes(keyLength % 97);
      const want = createHmac(alg, key).update(data).digest();
      const cut = Math.floor(data.length / 3);
      t.same(hmac(alg, key, data), want, `${alg}, ${keyLength}-byte key, one part`);
      t.same(hmac(alg, key, data.subarray(0, cut), data.subarray(cut)), want, `${alg}, ${keyLength}-byte key, two parts`);
      t.same(hmac(alg, key), createHmac(alg, key).digest(), `${alg}, ${keyLength}-byte key, empty message`);
    }
  }
  t.end();
});

t.test('leaves the caller\'s key and message as they were', (t) => {
  const key = randomBytes(200); // hashed first: the hashed copy is wiped, the caller's key must not be
  const keyCopy = Buffer.from(key);
  const data = randomBytes(50);
  const dataCopy = Buffer.from(data);
  hmac('sha256', key, data);
  t.same(key, keyCopy);
  t.same(data, dataCopy);
  t.end();
});
