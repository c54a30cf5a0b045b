// The AEAD opener kept per key (proxy/tls/aead.ts aeadOpener, native/src/aead.cc): it opens
// exactly what aeadSeal sealed for every algorithm and size a TLS record can have, refuses
// anything tampered without leaving plaintext behind, and holds no key after wipe(). The
// record formats on top of it: tls-record-protection.test.ts.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { native } from '../../native/index.js';
import { AEAD_TAG_LENGTH, aeadOpen, aeadOpener, aeadSeal } from '../../proxy/tls/aead.js';
import { AEAD_PARAMS } from '../../proxy/tls/suites.js';

const ALGORITHMS = [...new Set(Object.values(AEAD_PARAMS).map((p) => p.algorithm))];
const keyFor = (alg: string): Buffer => randomBytes(alg === 'aes-128-gcm' || alg === 'aes-128-ccm' ? 16 : 32);
// Empty, one byte, a small request, one byte short of and a full TLS 1.3 inner plaintext.
const SIZES = [0, 1, 100, 16_384, 16_385];

for (const alg of ALGORITHMS) {
  t.test(`${alg}: opens what aeadSeal sealed, record after record under one key`, (t) => {
    const key = keyFor(alg);
    const opener = aeadOpener(alg, key);
    for (const size of SIZES) {
      const nonce = randomBytes(12);
      const aad = randomBytes(5);
      const pt = randomBytes(size);
      const sealed = aeadSeal(alg, key, nonce, aad, pt);
      const got = opener.open(nonce, aad, sealed);
      t.ok(got?.equals(pt), `${size} B`);
      t.ok(aeadOpen(alg, key, nonce, aad, sealed)?.equals(pt), `${size} B: the per-record path agrees`);
    }
    opener.wipe();
    t.end();
  });

  t.test(`${alg}: a tampered record, a wrong nonce or a short input does not open`, (t) => {
    const key = keyFor(alg);
    const opener = aeadOpener(alg, key);
    const nonce = randomBytes(12);
    const aad = randomBytes(13);
    const sealed = aeadSeal(alg, key, nonce, aad, randomBytes(200));
    const flip = (b: Buffer, i: number): Buffer => {
      const c = Buffer.from(b);
      c[i] = (c[i] ?? 0) ^ 1;
      return c;
    };
    t.equal(opener.open(nonce, aad, flip(sealed, 3)), null, 'ciphertext');
    t.equal(opener.open(nonce, aad, flip(sealed, sealed.length - 1)), null, 'tag');
    t.equal(opener.open(nonce, flip(aad, 0), sealed), null, 'additional data');
    t.equal(opener.open(flip(nonce, 11), aad, sealed), null, 'nonce');
    t.equal(opener.open(nonce, aad, sealed.subarray(0, AEAD_TAG_LENGTH - 1)), null, 'shorter than a tag');
    t.ok(opener.open(nonce, aad, sealed), 'the intact record still opens after the failures (the context is reusable)');
    opener.wipe();
    t.end();
  });
}

t.test('native opener: no plaintext left in `out` when a record does not authenticate', (t) => {
  const key = randomBytes(16);
  const ctx = native().createAeadOpener('aes-128-gcm', key);
  const nonce = randomBytes(12);
  const pt = Buffer.alloc(64, 0x5a);
  const sealed = aeadSeal('aes-128-gcm', key, nonce, Buffer.alloc(0), pt);
  sealed[sealed.length - 1]! ^= 1;
  const out = Buffer.alloc(64, 0xee);
  t.equal(ctx.open(nonce, Buffer.alloc(0), sealed, out), -1);
  t.ok(out.equals(Buffer.alloc(64)), 'out is zeroed, not the decrypted bytes');
  ctx.wipe();
  t.end();
});

t.test('native opener: wipe() ends it; bad arguments are TypeErrors', (t) => {
  const key = randomBytes(32);
  const ctx = native().createAeadOpener('chacha20-poly1305', key);
  ctx.wipe();
  ctx.wipe();
  t.throws(() => ctx.open(randomBytes(12), Buffer.alloc(0), randomBytes(32), Buffer.alloc(16)), /after wipe/, 'used after wipe');
  t.ok(key.some((b) => b !== 0), "the caller's key Buffer is the caller's: not zeroed by the addon");
  t.throws(() => native().createAeadOpener('aes-128-ccm', randomBytes(16)), TypeError, 'CCM is not offered');
  t.throws(() => native().createAeadOpener('aes-256-gcm', randomBytes(16)), TypeError, 'key length');
  const gcm = native().createAeadOpener('aes-128-gcm', randomBytes(16));
  t.throws(() => gcm.open(randomBytes(8), Buffer.alloc(0), randomBytes(32), Buffer.alloc(16)), TypeError, 'nonce length');
  t.throws(() => gcm.open(randomBytes(12), Buffer.alloc(0), randomBytes(64), Buffer.alloc(16)), TypeError, 'out too short');
  gcm.wipe();
  t.end();
});
