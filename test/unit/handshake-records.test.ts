import t from 'tap';
import { HandshakeReassembler, RecordFramer } from '../../proxy/handshake/records.js';
import { TlsWireError } from '../../proxy/handshake/errors.js';

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
