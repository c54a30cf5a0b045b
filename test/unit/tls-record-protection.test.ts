import t from 'tap';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { ContentType } from '../../proxy/tls/control.js';
import { aeadSeal, seqBytes, xorNonce, xorNonceInto, xorNonceWords } from '../../proxy/tls/aead.js';
import { MAX_PLAINTEXT, RecordProtection } from '../../proxy/tls/record-protection.js';
import { AEAD_PARAMS } from '../../proxy/tls/suites.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const CIPHERS: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'AES_CCM_128', 'CHACHA20_POLY1305'];

// RFC 8448 section 3: the client's Finished record, under the client handshake traffic secret, seq 0.
const CLIENT_HS_SECRET = 'b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21';
const CLIENT_FINISHED_RECORD =
  '170303003575ec4dc238cce60b298044a71e219c56cc77b0517fe9b93c7a4bfc44d87f38f80338ac98fc46deb384bd1caeacab6867d726c40546';
const CLIENT_FINISHED_MESSAGE = '14000020a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61';

function pair(version: TlsVersion, cipher: KernelCipher): [RecordProtection, RecordProtection] {
  if (version === 'TLSv1.3') {
    const secret = Buffer.alloc(AEAD_PARAMS[cipher].tls13Hash === 'sha384' ? 48 : 32, 9);
    return [RecordProtection.tls13(cipher, secret), RecordProtection.tls13(cipher, secret)];
  }
  const p = AEAD_PARAMS[cipher];
  const key = Buffer.alloc(p.keyLength, 5);
  const writeIv = Buffer.alloc(p.tls12FixedIvLength, 6);
  return [
    RecordProtection.tls12({ cipher, key, writeIv, seq: 0n, explicitNonce: 0x1234n }),
    RecordProtection.tls12({ cipher, key, writeIv, seq: 0n, explicitNonce: null }),
  ];
}

function split(rec: Buffer): [Buffer, Buffer] {
  return [rec.subarray(0, 5), rec.subarray(5)];
}

t.test('RFC 8448: the client Finished record opens to the published Finished message', (t) => {
  const p = RecordProtection.tls13('AES_GCM_128', hex(CLIENT_HS_SECRET));
  const o = p.open(...split(hex(CLIENT_FINISHED_RECORD)));
  t.ok(o);
  t.equal(o?.type, ContentType.HANDSHAKE);
  t.equal(o?.data.toString('hex'), CLIENT_FINISHED_MESSAGE);
  t.equal(p.seq, 1n);
  t.end();
});

t.test('RFC 8448: sealing the client Finished reproduces the record byte for byte', (t) => {
  const p = RecordProtection.tls13('AES_GCM_128', hex(CLIENT_HS_SECRET));
  t.equal(p.seal(ContentType.HANDSHAKE, hex(CLIENT_FINISHED_MESSAGE)).toString('hex'), CLIENT_FINISHED_RECORD);
  t.end();
});

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  for (const cipher of CIPHERS) {
    t.test(`${version} ${cipher}: seal/open round trip over several records`, (t) => {
      const [tx, rx] = pair(version, cipher);
      for (const len of [0, 1, 1000, MAX_PLAINTEXT]) {
        const pt = Buffer.alloc(len, len % 251);
        const rec = tx.seal(ContentType.APPLICATION_DATA, pt);
        t.equal(rec.readUInt16BE(3), rec.length - 5, 'header length covers the payload');
        const o = rx.open(...split(rec));
        t.equal(o?.type, ContentType.APPLICATION_DATA);
        t.ok(o?.data.equals(pt), `${len} bytes`);
      }
      t.equal(rx.seq, 4n);
      t.end();
    });
  }
}

t.test('TLS 1.3: inner content type and padding survive, outer type is always application_data', (t) => {
  const [tx, rx] = pair('TLSv1.3', 'AES_GCM_256');
  const rec = tx.seal(ContentType.ALERT, Buffer.from([1, 0]), 100);
  t.equal(rec[0], ContentType.APPLICATION_DATA);
  t.equal(rec.length, 5 + 2 + 1 + 100 + 16);
  const o = rx.open(...split(rec));
  t.equal(o?.type, ContentType.ALERT);
  t.same(o?.data, Buffer.from([1, 0]));
  t.end();
});

t.test('TLS 1.3: an all-padding inner plaintext is rejected', (t) => {
  const [tx, rx] = pair('TLSv1.3', 'AES_GCM_128');
  const rec = tx.seal(0, Buffer.alloc(0), 10); // inner type 0 → nothing but zeros
  t.equal(rx.open(...split(rec)), null);
  t.end();
});

t.test('a tampered record does not open and does not advance the sequence number', (t) => {
  const [tx, rx] = pair('TLSv1.3', 'CHACHA20_POLY1305');
  const rec = tx.seal(ContentType.APPLICATION_DATA, Buffer.from('hello'));
  const bad = Buffer.from(rec);
  bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
  t.equal(rx.open(...split(bad)), null);
  t.equal(rx.seq, 0n);
  t.ok(rx.open(...split(rec)));
  t.end();
});

t.test('a receiver one record ahead cannot open (sequence number is authenticated)', (t) => {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const [tx, rx] = pair(version, 'AES_GCM_128');
    rx.seq = 1n;
    t.equal(rx.open(...split(tx.seal(ContentType.APPLICATION_DATA, Buffer.from('x')))), null, version);
  }
  t.end();
});

t.test('TLS 1.2 GCM: explicit nonce is sent on the wire and counts up from its start value', (t) => {
  const [tx, rx] = pair('TLSv1.2', 'AES_GCM_128');
  const r1 = tx.seal(ContentType.APPLICATION_DATA, Buffer.from('a'));
  const r2 = tx.seal(ContentType.APPLICATION_DATA, Buffer.from('b'));
  t.equal(r1.readBigUInt64BE(5), 0x1234n);
  t.equal(r2.readBigUInt64BE(5), 0x1235n);
  t.equal(rx.open(...split(r1))?.explicitNonce, 0x1234n);
  t.equal(tx.toCryptoInfo().iv.readBigUInt64BE(0), 0x1236n, 'the kernel state carries the next explicit nonce');
  t.end();
});

t.test('CryptoInfo round trip keeps the exact state (TLS 1.3 AES: salt||iv, ChaCha20: whole iv)', (t) => {
  for (const cipher of CIPHERS) {
    const [tx, rx] = pair('TLSv1.3', cipher);
    tx.seal(ContentType.HANDSHAKE, Buffer.from('ticket'));
    const info = tx.toCryptoInfo();
    t.equal(info.recSeq, 1n);
    t.equal(info.iv.length, cipher === 'CHACHA20_POLY1305' ? 12 : 8, `${cipher} iv field`);
    t.equal(info.salt.length, cipher === 'CHACHA20_POLY1305' ? 0 : 4, `${cipher} salt field`);
    const again = RecordProtection.fromCryptoInfo(info);
    rx.open(...split(tx.seal(ContentType.APPLICATION_DATA, Buffer.from('skip'))));
    t.ok(rx.open(...split(again.seal(ContentType.APPLICATION_DATA, Buffer.alloc(0)))) === null, 'rebuilt at seq 1 while rx expects 2');
  }
  t.end();
});

t.test('TLS 1.2 CryptoInfo carries the next explicit nonce in iv and the write IV in salt', (t) => {
  const [tx, rx] = pair('TLSv1.2', 'AES_GCM_256');
  tx.seal(ContentType.HANDSHAKE, Buffer.from('finished'));
  const info = tx.toCryptoInfo();
  t.equal(info.iv.readBigUInt64BE(0), 0x1235n);
  t.same(info.salt, Buffer.alloc(4, 6));
  t.equal(info.recSeq, 1n);
  const again = RecordProtection.fromCryptoInfo(info);
  rx.open(...split(RecordProtection.fromCryptoInfo({ ...info, recSeq: 0n, iv: Buffer.alloc(8) }).seal(22, Buffer.from('finished'))));
  const o = rx.open(...split(again.seal(ContentType.APPLICATION_DATA, Buffer.from('data'))));
  t.equal(o?.data.toString(), 'data');
  t.equal(o?.explicitNonce, 0x1235n);
  t.end();
});

t.test('TLS 1.3 KeyUpdate: both sides move to the next secret and sequence 0', (t) => {
  const [tx, rx] = pair('TLSv1.3', 'AES_GCM_256');
  tx.seal(ContentType.APPLICATION_DATA, Buffer.from('one'));
  rx.open(...split(tx.seal(ContentType.APPLICATION_DATA, Buffer.from('two'))));
  tx.keyUpdate();
  t.equal(tx.seq, 0n);
  const rec = tx.seal(ContentType.APPLICATION_DATA, Buffer.from('three'));
  t.equal(rx.open(...split(rec)), null, 'old key no longer opens');
  rx.keyUpdate();
  t.equal(rx.open(...split(rec))?.data.toString(), 'three');
  t.end();
});

t.test('KeyUpdate is refused for TLS 1.2', (t) => {
  const [tx] = pair('TLSv1.2', 'CHACHA20_POLY1305');
  t.throws(() => tx.keyUpdate());
  t.end();
});

t.test('wipe() zeroes the key material it holds', (t) => {
  const info = RecordProtection.tls13('AES_GCM_128', Buffer.alloc(32, 1)).toCryptoInfo();
  const p = RecordProtection.fromCryptoInfo(info, Buffer.alloc(32, 1));
  p.wipe();
  const after = p.toCryptoInfo();
  t.ok(after.key.equals(Buffer.alloc(16)), 'key zeroed');
  t.ok(Buffer.concat([after.salt, after.iv]).equals(Buffer.alloc(12)), 'iv zeroed');
  t.ok(p.trafficSecret()?.equals(Buffer.alloc(32)), 'secret zeroed');
  t.end();
});

t.test('oversized plaintext is refused', (t) => {
  const [tx] = pair('TLSv1.3', 'AES_GCM_128');
  t.throws(() => tx.seal(ContentType.APPLICATION_DATA, Buffer.alloc(MAX_PLAINTEXT + 1)), RangeError);
  t.end();
});

t.test('xorNonceInto: iv XOR the 64-bit sequence number, in place; the same as xorNonce', (t) => {
  const iv = Buffer.from('000102030405060708090a0b', 'hex');
  const out = Buffer.alloc(12, 0xff);
  t.equal(xorNonceInto(out, iv, 0x0102030405060708n), out, 'returns the buffer it wrote');
  t.equal(out.toString('hex'), '0001020305070503' + '0d0f0d03');
  t.equal(xorNonceInto(out, iv, 0n).toString('hex'), iv.toString('hex'), 'sequence 0: the iv itself');
  t.equal(xorNonceInto(out, iv, 0xffff_ffff_ffff_ffffn).toString('hex'), '00010203fbfaf9f8f7f6f5f4');
  for (const seq of [1n, 255n, 1n << 32n, (1n << 53n) + 1n]) t.same(xorNonceInto(out, iv, seq), xorNonce(iv, seq));
  t.throws(() => xorNonceInto(out, iv, 1n << 64n), RangeError);
  t.throws(() => xorNonceInto(out, iv, -1n), RangeError);
  t.throws(() => xorNonceInto(Buffer.alloc(8), iv, 0n), RangeError);
  t.end();
});

// The nonce computed as a 96-bit number (RFC 8446 5.3), independently of the code under test.
const refNonce = (iv: Buffer, seq: bigint): Buffer =>
  Buffer.from((BigInt(`0x${iv.toString('hex')}`) ^ seq).toString(16).padStart(24, '0'), 'hex');

t.test('xorNonceWords: the nonce of a sequence number given as two 32-bit halves', (t) => {
  const iv = Buffer.from('f0e1d2c3b4a5968778695a4b', 'hex');
  const out = Buffer.alloc(12);
  for (const seq of [0n, 1n, 0xffff_ffffn, 1n << 32n, (1n << 32n) + 1n, (1n << 53n) + 1n, 0xffff_ffff_ffff_ffffn]) {
    const hi = Number(seq >> 32n);
    const lo = Number(seq & 0xffff_ffffn);
    t.same(xorNonceWords(out, iv, hi, lo), refNonce(iv, seq), `seq ${seq}`);
    t.same(xorNonceInto(Buffer.alloc(12), iv, seq), refNonce(iv, seq), `xorNonceInto, seq ${seq}`);
  }
  t.end();
});

// A record sealed the long way (RFC 8446 5.2, RFC 5288 3), from the CryptoInfo's key material: the
// oracle for the sequence numbers below.
function referenceRecord(version: TlsVersion, cipher: KernelCipher, key: Buffer, iv12: Buffer, seq: bigint, data: Buffer): Buffer {
  const alg = AEAD_PARAMS[cipher].algorithm;
  if (version === 'TLSv1.3') {
    const inner = Buffer.concat([data, Buffer.from([ContentType.APPLICATION_DATA])]);
    const header = Buffer.from([ContentType.APPLICATION_DATA, 3, 3, 0, 0]);
    header.writeUInt16BE(inner.length + 16, 3);
    return Buffer.concat([header, aeadSeal(alg, key, refNonce(iv12, seq), header, inner)]);
  }
  // TLS 1.2 GCM: salt || explicit nonce (here the sequence number, as the kernel sends it).
  const explicit = seqBytes(seq);
  const aad = Buffer.concat([seqBytes(seq), Buffer.from([ContentType.APPLICATION_DATA, 3, 3, 0, 0])]);
  aad.writeUInt16BE(data.length, 11);
  const sealed = aeadSeal(alg, key, Buffer.concat([iv12.subarray(0, 4), explicit]), aad, data);
  const header = Buffer.from([ContentType.APPLICATION_DATA, 3, 3, 0, 0]);
  header.writeUInt16BE(8 + sealed.length, 3);
  return Buffer.concat([header, explicit, sealed]);
}

for (const [version, cipher] of [['TLSv1.3', 'AES_GCM_128'], ['TLSv1.3', 'CHACHA20_POLY1305'], ['TLSv1.2', 'AES_GCM_256']] as const) {
  t.test(`${version} ${cipher}: sequence numbers across 2^32 and up to 2^64 - 2 seal and open like the reference`, (t) => {
    const key = Buffer.alloc(AEAD_PARAMS[cipher].keyLength, 0x42);
    const iv12 = Buffer.from('0a0b0c0d0e0f101112131415', 'hex');
    const chacha = cipher === 'CHACHA20_POLY1305';
    const at = (seq: bigint): RecordProtection => RecordProtection.fromCryptoInfo({
      version, cipher, key, recSeq: seq,
      // TLS 1.3 AES: salt || iv; ChaCha20: the whole iv; TLS 1.2 GCM: the salt and the next explicit nonce.
      iv: chacha ? iv12 : version === 'TLSv1.3' ? iv12.subarray(4) : seqBytes(seq),
      salt: chacha ? Buffer.alloc(0) : iv12.subarray(0, 4),
    });
    for (const start of [0xffff_fffen, 0xffff_ffff_ffff_fffcn]) {
      const tx = at(start);
      const rx = at(start);
      for (let i = 0n; i < 3n; i++) {
        const data = Buffer.from(`record ${start + i}`);
        const rec = tx.seal(ContentType.APPLICATION_DATA, data);
        t.same(rec, referenceRecord(version, cipher, key, iv12, start + i, data), `seq ${start + i}: byte for byte`);
        t.same(rx.open(rec.subarray(0, 5), rec.subarray(5))?.data, data, `seq ${start + i}: opens`);
      }
      t.equal(tx.seq, start + 3n, 'the bigint view counts on');
      t.equal(rx.seq, start + 3n);
    }
    const last = at(0xffff_ffff_ffff_fffen);
    last.seal(ContentType.APPLICATION_DATA, Buffer.from('the last one'));
    t.throws(() => last.seal(ContentType.APPLICATION_DATA, Buffer.from('one more')), /exhausted/, 'no record numbered 2^64 - 1');
    t.equal(last.seq, 0xffff_ffff_ffff_ffffn);
    const rx = at(0xffff_ffff_ffff_ffffn);
    t.equal(rx.open(Buffer.from([23, 3, 3, 0, 17]), Buffer.alloc(17)), null, 'nor one opened');
    t.end();
  });
}

t.test('the sequence number refuses values outside 64 bits', (t) => {
  const [tx] = pair('TLSv1.3', 'AES_GCM_128');
  t.throws(() => { tx.seq = -1n; }, RangeError);
  t.throws(() => { tx.seq = 1n << 64n; }, RangeError);
  t.throws(() => RecordProtection.tls13('AES_GCM_128', Buffer.alloc(32), 1n << 64n), RangeError);
  tx.seq = (1n << 32n) + 5n;
  t.equal(tx.seq, (1n << 32n) + 5n);
  t.end();
});
