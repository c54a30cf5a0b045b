import t from 'tap';
import { HandshakeReassembler, RecordFramer, RecordOverflowError, RecordReader, TlsWireError, maxCiphertext } from '../../proxy/tls/records.js';
import { AlertDescription, ContentType } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';

const header = (len: number): Buffer => {
  const h = Buffer.from([23, 3, 3, 0, 0]);
  h.writeUInt16BE(len, 3);
  return h;
};

const record = (type: number, body: Buffer): Buffer => {
  const h = Buffer.from([type, 3, 3, 0, 0]);
  h.writeUInt16BE(body.length, 3);
  return Buffer.concat([h, body]);
};

t.test('framer yields whole records across arbitrary chunk boundaries', (t) => {
  const wire = Buffer.concat([record(22, Buffer.alloc(300, 1)), record(23, Buffer.alloc(5, 2)), record(21, Buffer.from([1, 0]))]);
  const f = new RecordFramer();
  const got: number[] = [];
  for (let i = 0; i < wire.length; i += 7) {
    f.push(wire.subarray(i, i + 7));
    for (let r = f.take(); r; r = f.take()) got.push(r.type, r.payload.length);
  }
  t.same(got, [22, 300, 23, 5, 21, 2]);
  t.equal(f.length, 0);
  t.end();
});

t.test('framer keeps a trailing partial record for takeAll()', (t) => {
  const f = new RecordFramer();
  const rec = record(23, Buffer.alloc(40, 3));
  f.push(Buffer.concat([rec, rec.subarray(0, 9)]));
  t.equal(f.take()?.raw.length, 45);
  t.equal(f.take(), null);
  t.same(f.takeAll(), rec.subarray(0, 9));
  t.end();
});

t.test('framer rejects plain HTTP and SSLv2-style hellos as not TLS', (t) => {
  for (const junk of [Buffer.from('GET / HTTP/1.1\r\n'), Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])]) {
    const f = new RecordFramer();
    f.push(junk);
    t.throws(() => f.peek(), TlsWireError);
    try {
      f.peek();
    } catch (e) {
      t.equal((e as TlsWireError).notTls, true);
    }
  }
  t.end();
});

t.test('framer rejects a record longer than 2^14 + 2048', (t) => {
  const f = new RecordFramer();
  f.push(Buffer.from([23, 3, 3, 0x48, 0x01]));
  t.throws(() => f.peek(), TlsWireError);
  t.end();
});

t.test('reassembler joins a message split over records and splits messages sharing one', (t) => {
  const a = Buffer.from([20, 0, 0, 3, 9, 9, 9]);
  const b = Buffer.from([24, 0, 0, 1, 1]);
  const r = new HandshakeReassembler();
  t.same(r.push(a.subarray(0, 2)), []);
  t.notOk(r.empty);
  const msgs = r.push(Buffer.concat([a.subarray(2), b]));
  t.same(msgs.map((m) => [m.type, m.body.toString('hex')]), [[20, '090909'], [24, '01']]);
  t.ok(r.empty);
  t.end();
});

t.test('reassembler refuses a message over its limit', (t) => {
  const r = new HandshakeReassembler(1024);
  t.throws(() => r.push(Buffer.from([11, 0, 0x10, 0])), TlsWireError);
  t.end();
});

/** The framer's error for `f.peek()`, or null. */
function peekError(f: RecordFramer): unknown {
  try {
    f.peek();
    return null;
  } catch (err) {
    return err;
  }
}

t.test('per-version ciphertext limit: TLS 1.3 2^14 + 256, TLS 1.2 2^14 + 2048 (RFC 8446 5.2, RFC 5246 6.2.3)', (t) => {
  t.equal(maxCiphertext('TLSv1.3'), 16384 + 256);
  t.equal(maxCiphertext('TLSv1.2'), 16384 + 2048);
  const framer = (version: 'TLSv1.2' | 'TLSv1.3', len: number): RecordFramer => {
    const f = new RecordFramer(maxCiphertext(version));
    f.push(header(len));
    return f;
  };
  const at13 = framer('TLSv1.3', 16384 + 256);
  t.equal(at13.peek(), null, 'TLS 1.3: 2^14 + 256 is fine (waits for the body)');
  t.equal(at13.missingBytes(), 16384 + 256);
  const over13 = peekError(framer('TLSv1.3', 16384 + 257));
  t.ok(over13 instanceof RecordOverflowError, 'TLS 1.3: 2^14 + 257 overflows');
  t.ok(over13 instanceof TlsWireError && over13.notTls, 'still a TlsWireError for the engine');
  t.equal(framer('TLSv1.2', 16384 + 2048).peek(), null, 'TLS 1.2: 2^14 + 2048 is fine');
  t.ok(peekError(framer('TLSv1.2', 16384 + 2049)) instanceof RecordOverflowError, 'TLS 1.2: 2^14 + 2049 overflows');
  t.end();
});

t.test('the reader: a TLS 1.3 record of 2^14 + 257 bytes is record_overflow at its header; 2^14 + 256 is framed and opened', (t) => {
  const secret = Buffer.alloc(32, 5);
  const over = new RecordReader(RecordProtection.tls13('AES_GCM_128', secret));
  over.push(header(16384 + 257));
  t.match(over.next(), { kind: 'fatal', alert: AlertDescription.RECORD_OVERFLOW }, 'without waiting for the body');
  t.equal(over.next(), null, 'nothing after a fatal event');

  // No AEAD record is that long (inner plaintext ≤ 2^14 + 1), but the limit
  // itself is legal: the record is framed and goes to authentication.
  const at = new RecordReader(RecordProtection.tls13('AES_GCM_128', secret));
  at.push(header(16384 + 256));
  t.equal(at.next(), null, 'waits for the body');
  at.push(Buffer.alloc(16384 + 256));
  t.match(at.next(), { kind: 'fatal', alert: AlertDescription.BAD_RECORD_MAC });

  const peer = RecordProtection.tls13('AES_GCM_128', secret);
  const ok = new RecordReader(RecordProtection.tls13('AES_GCM_128', secret));
  ok.push(peer.seal(ContentType.APPLICATION_DATA, Buffer.alloc(16384, 1)));
  t.match(ok.next(), { kind: 'data' }, 'a full 2^14-byte record');

  const key = Buffer.alloc(16, 7);
  const writeIv = Buffer.alloc(4, 8);
  const reader12 = new RecordReader(RecordProtection.tls12({ cipher: 'AES_GCM_128', key, writeIv, seq: 0n, explicitNonce: null }));
  reader12.push(header(16384 + 2048));
  t.equal(reader12.next(), null, 'TLS 1.2: 2^14 + 2048 waits for its body');
  t.end();
});
