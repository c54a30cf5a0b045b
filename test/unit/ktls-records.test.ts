// The JS side of the kTLS record layer: the RX reader (leftover, tx mode,
// fallback), post-handshake message parsing, the KeyUpdate secret chain and
// rate limit. Peers are real RecordProtection senders built from the same
// CryptoInfo the kernel would get.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { RecordReader } from '../../proxy/tls/records.js';
import type { RxEvent } from '../../proxy/tls/records.js';
import { KeyUpdateRateLimiter } from '../../proxy/record-layer/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';
import { buildKeyUpdate, buildHandshakeMessage, ContentType, PostHandshakeParser } from '../../proxy/tls/control.js';
import type { KernelCipher } from '../../native/crypto-info.js';

function tls13Pair(cipher: KernelCipher = 'AES_GCM_128', seq = 0n) {
  const secret = randomBytes(cipher === 'AES_GCM_256' ? 48 : 32);
  const peer = RecordProtection.tls13(cipher, secret, seq);
  // Our side is rebuilt from the kernel view only (plus the secret), like install does.
  const info = RecordProtection.tls13(cipher, secret, seq).toCryptoInfo();
  const ours = RecordProtection.fromCryptoInfo(info, secret);
  return { peer, reader: new RecordReader(ours), secret };
}

function tls12Pair() {
  const key = randomBytes(16);
  const writeIv = randomBytes(4);
  const peer = RecordProtection.tls12({ cipher: 'AES_GCM_128', key, writeIv, seq: 1n, explicitNonce: 0x1234n });
  const ours = RecordProtection.fromCryptoInfo({ version: 'TLSv1.2', cipher: 'AES_GCM_128', key: Buffer.from(key), iv: Buffer.alloc(8), salt: Buffer.from(writeIv), recSeq: 1n });
  return { peer, reader: new RecordReader(ours) };
}

function drain(r: RecordReader): RxEvent[] {
  const out: RxEvent[] = [];
  for (let e = r.next(); e; e = r.next()) out.push(e);
  return out;
}

function dataOf(events: RxEvent[]): Buffer {
  return Buffer.concat(events.flatMap((e) => (e.kind === 'data' ? [e.data] : [])));
}

t.test('data records fed one byte at a time come out byte-exact', (t) => {
  const { peer, reader } = tls13Pair('CHACHA20_POLY1305', 2n);
  const msgs = [randomBytes(1), randomBytes(16384), randomBytes(700)];
  const wire = Buffer.concat(msgs.map((m) => peer.seal(ContentType.APPLICATION_DATA, m)));
  const events: RxEvent[] = [];
  for (const b of wire) {
    reader.push(Buffer.from([b]));
    events.push(...drain(reader));
  }
  t.same(dataOf(events), Buffer.concat(msgs));
  t.equal(reader.records, 3);
  t.equal(reader.rx.seq, 5n);
  t.end();
});

t.test('missingBytes: header first, then exactly the rest of the record', (t) => {
  const { peer, reader } = tls13Pair();
  const rec = peer.seal(ContentType.APPLICATION_DATA, Buffer.from('hello'));
  t.equal(reader.missingBytes(), 0);
  reader.push(rec.subarray(0, 3));
  t.equal(reader.missingBytes(), 2);
  reader.push(rec.subarray(3, 9));
  t.equal(reader.missingBytes(), rec.length - 9);
  t.equal(reader.next(), null);
  reader.push(rec.subarray(9));
  t.equal(reader.missingBytes(), 0);
  t.same(dataOf(drain(reader)), Buffer.from('hello'));
  t.end();
});

t.test('TLS 1.3 KeyUpdate: RX moves to the next key before the next record', (t) => {
  for (const requested of [true, false]) {
    const { peer, reader } = tls13Pair('AES_GCM_256');
    const wire = Buffer.concat([
      peer.seal(ContentType.APPLICATION_DATA, Buffer.from('before')),
      peer.seal(ContentType.HANDSHAKE, buildKeyUpdate(requested)),
      (peer.keyUpdate(), peer.seal(ContentType.APPLICATION_DATA, Buffer.from('after'))),
    ]);
    reader.push(wire);
    const ev = drain(reader);
    t.strictSame(ev.map((e) => e.kind), ['data', 'key_update', 'data']);
    t.strictSame(ev[1], { kind: 'key_update', requested });
    t.same(dataOf(ev), Buffer.from('beforeafter'));
    t.equal(reader.rx.seq, 1n, 'sequence restarts at the new key');
  }
  t.end();
});

t.test('KeyUpdate not at the end of its record is fatal', (t) => {
  const { peer, reader } = tls13Pair();
  const twoMsgs = Buffer.concat([buildKeyUpdate(false), buildKeyUpdate(false)]);
  reader.push(peer.seal(ContentType.HANDSHAKE, twoMsgs));
  const ev = drain(reader);
  t.equal(ev.length, 1);
  t.match(ev[0], { kind: 'fatal', alert: 10 });
  t.end();
});

t.test('a tampered record is a decrypt error and stops the reader', (t) => {
  const { peer, reader } = tls13Pair();
  const rec = peer.seal(ContentType.APPLICATION_DATA, Buffer.from('x'.repeat(50)));
  rec[rec.length - 1]! ^= 1;
  reader.push(rec);
  reader.push(peer.seal(ContentType.APPLICATION_DATA, Buffer.from('y')));
  const ev = drain(reader);
  t.equal(ev.length, 1);
  t.match(ev[0], { kind: 'fatal', alert: 20, why: /^decrypt_error/ });
  t.equal(reader.next(), null);
  t.end();
});

t.test('alerts: close_notify and a malformed one', (t) => {
  const { peer, reader } = tls13Pair();
  reader.push(peer.seal(ContentType.ALERT, Buffer.from([1, 0])));
  t.strictSame(drain(reader), [{ kind: 'alert', level: 1, description: 0 }]);
  const p2 = tls13Pair();
  p2.reader.push(p2.peer.seal(ContentType.ALERT, Buffer.from([1])));
  t.match(drain(p2.reader), [{ kind: 'fatal', alert: 50 }]);
  t.end();
});

t.test('TLS 1.3: an unprotected record after the handshake is fatal', (t) => {
  const { reader } = tls13Pair();
  reader.push(Buffer.from([21, 3, 3, 0, 2, 1, 0]));
  t.match(drain(reader), [{ kind: 'fatal', alert: 10 }]);
  t.end();
});

t.test('oversized record header → record_overflow without waiting for its body', (t) => {
  const { reader } = tls13Pair();
  reader.push(Buffer.from([23, 3, 3, 0xff, 0xff]));
  t.match(drain(reader), [{ kind: 'fatal', alert: 22 }]);
  t.end();
});

t.test('TLS 1.2 GCM: data, and a renegotiation ClientHello becomes an event', (t) => {
  const { peer, reader } = tls12Pair();
  reader.push(peer.seal(ContentType.APPLICATION_DATA, Buffer.from('one')));
  reader.push(peer.seal(ContentType.HANDSHAKE, buildHandshakeMessage(1, randomBytes(60))));
  reader.push(peer.seal(ContentType.APPLICATION_DATA, Buffer.from('two')));
  const ev = drain(reader);
  t.strictSame(ev.map((e) => e.kind), ['data', 'renegotiation', 'data']);
  t.same(dataOf(ev), Buffer.from('onetwo'));
  t.end();
});

t.test('PostHandshakeParser: a KeyUpdate split across two records', (t) => {
  const p = new PostHandshakeParser(true);
  const ku = buildKeyUpdate(true);
  t.strictSame(p.push(ku.subarray(0, 2)), [], 'the first half is held');
  t.strictSame(p.push(ku.subarray(2)), [{ kind: 'key_update', requested: true }]);
  t.strictSame(p.push(buildKeyUpdate(false)), [{ kind: 'key_update', requested: false }], 'nothing left over');
  t.end();
});

t.test('PostHandshakeParser: what a client must not send after the handshake', (t) => {
  t.match(new PostHandshakeParser(true).push(buildHandshakeMessage(4, Buffer.alloc(10))), [{ kind: 'fatal', alert: 10 }]);
  t.match(new PostHandshakeParser(true).push(buildHandshakeMessage(24, Buffer.from([2]))), [{ kind: 'fatal', alert: 50 }]);
  t.match(new PostHandshakeParser(true).push(buildHandshakeMessage(24, Buffer.from([0, 0]))), [{ kind: 'fatal', alert: 50 }]);
  t.match(new PostHandshakeParser(false).push(buildKeyUpdate(false)), [{ kind: 'fatal', alert: 10 }], 'no KeyUpdate in TLS 1.2');
  t.match(new PostHandshakeParser(true).push(Buffer.alloc(0)), [{ kind: 'fatal' }]);
  t.end();
});

t.test('a kernel direction\'s next key (keyUpdate() then toCryptoInfo()) opens what the peer sends after its KeyUpdate', (t) => {
  for (const cipher of ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305'] as const) {
    const { peer, secret } = tls13Pair(cipher);
    const keys = RecordProtection.tls13(cipher, secret);
    for (let gen = 1; gen <= 3; gen++) {
      peer.keyUpdate();
      keys.keyUpdate();
      const info = keys.toCryptoInfo();
      t.equal(info.recSeq, 0n);
      const rx = RecordProtection.fromCryptoInfo(info);
      const rec = peer.seal(ContentType.APPLICATION_DATA, Buffer.from(`gen ${gen}`));
      const opened = rx.open(rec.subarray(0, 5), rec.subarray(5));
      t.same(opened?.data, Buffer.from(`gen ${gen}`), `${cipher} generation ${gen}`);
    }
    keys.wipe();
  }
  t.end();
});

t.test('the kept protection does not keep the caller\'s secret buffer alive', (t) => {
  const secret = randomBytes(32);
  const copy = Buffer.from(secret);
  const keys = RecordProtection.fromCryptoInfo(RecordProtection.tls13('AES_GCM_128', copy).toCryptoInfo(), secret);
  secret.fill(0); // the caller wipes its copy, as install does
  const peer = RecordProtection.tls13('AES_GCM_128', copy);
  peer.keyUpdate();
  keys.keyUpdate();
  const rx = RecordProtection.fromCryptoInfo(keys.toCryptoInfo());
  const rec = peer.seal(ContentType.APPLICATION_DATA, Buffer.from('ok'));
  t.same(rx.open(rec.subarray(0, 5), rec.subarray(5))?.data, Buffer.from('ok'));
  t.end();
});

t.test('pushTransient: the caller may reuse its buffer at once; only a partial record is kept', (t) => {
  for (const [cipher, version] of [['AES_GCM_128', '1.3'], ['CHACHA20_POLY1305', '1.3'], ['AES_GCM_128', '1.2']] as const) {
    const { peer, reader } = version === '1.3' ? tls13Pair(cipher, 7n) : tls12Pair();
    const msgs = [randomBytes(1024), randomBytes(1), randomBytes(16384), randomBytes(333)];
    const wire = Buffer.concat(msgs.map((m) => peer.seal(ContentType.APPLICATION_DATA, m)));
    // Three whole records and part of the fourth in one read, as the shared receive buffer holds them.
    const cut = wire.length - 100;
    const scratch = Buffer.alloc(64 * 1024);
    wire.copy(scratch, 0, 0, cut);
    reader.pushTransient(scratch.subarray(0, cut));
    scratch.fill(0xee); // the next connection's read
    const first = drain(reader);
    t.same(dataOf(first), Buffer.concat(msgs.slice(0, 3)), `${cipher} TLS ${version}: whole records opened before the buffer was reused`);
    t.equal(reader.missingBytes(), 100, 'the partial record was kept (copied)');
    wire.copy(scratch, 0, cut);
    reader.pushTransient(scratch.subarray(0, 100));
    scratch.fill(0xee);
    t.same(dataOf(drain(reader)), msgs[3], 'the partial record completes from the kept copy');
    t.equal(reader.records, 4);
  }
  t.end();
});

t.test('pushTransient: events stay in order around a KeyUpdate and a failure', (t) => {
  const { peer, reader } = tls13Pair('AES_GCM_256');
  const records = [
    peer.seal(ContentType.APPLICATION_DATA, Buffer.from('before')),
    peer.seal(ContentType.HANDSHAKE, buildKeyUpdate(false)),
    (peer.keyUpdate(), peer.seal(ContentType.APPLICATION_DATA, Buffer.from('after'))),
    peer.seal(ContentType.APPLICATION_DATA, Buffer.from('tampered')),
    peer.seal(ContentType.APPLICATION_DATA, Buffer.from('never')),
  ];
  const bad = records[3]!;
  bad[bad.length - 1]! ^= 1;
  const wire = Buffer.concat(records);
  const scratch = Buffer.from(wire);
  reader.pushTransient(scratch);
  scratch.fill(0);
  const ev = drain(reader);
  t.same(ev.map((e) => e.kind), ['data', 'key_update', 'data', 'fatal']);
  t.same(dataOf(ev), Buffer.from('beforeafter'));
  const fatal = ev[3];
  t.ok(fatal?.kind === 'fatal' && fatal.why.startsWith('decrypt_error:'), 'the tampered record is a decrypt error');
  reader.pushTransient(peer.seal(ContentType.APPLICATION_DATA, Buffer.from('still never')));
  t.equal(reader.next(), null, 'nothing after the fatal event');
  t.end();
});

t.test('KeyUpdateRateLimiter: N per window, then refuses until the window slides', (t) => {
  let now = 0;
  const l = new KeyUpdateRateLimiter(3, () => now);
  t.ok(l.allow());
  now = 10_000;
  t.ok(l.allow());
  t.ok(l.allow());
  t.notOk(l.allow());
  now = 60_000; // the first stamp (t=0) leaves the window
  t.ok(l.allow());
  t.notOk(l.allow());
  const none = new KeyUpdateRateLimiter(0, () => 0);
  t.notOk(none.allow(), 'limit 0 refuses every KeyUpdate');
  t.end();
});
