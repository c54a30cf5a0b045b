// The production record layer with both sides in JS (RecordLayerStream, as
// installUserspace builds it: protections rebuilt from the CryptoInfo the
// kernel would get, the leftover queued in the reader) over a real loopback
// TCP connection, against a peer built from RecordProtection: control
// records (KeyUpdate, alerts, close_notify, renegotiation) and the leftover
// hand-over.
import net from 'node:net';
import t from 'tap';
import { RecordFramer, RecordReader } from '../../proxy/tls/records.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { AlertDescription, ContentType, HandshakeType, buildAlert, buildHandshakeMessage, buildKeyUpdate } from '../../proxy/tls/control.js';
import type { OpenedRecord } from '../../proxy/tls/record-protection.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';

interface Peer {
  server: RecordLayerStream;
  /** peerAlert events, as [level, description]. */
  alerts: Array<[number, number]>;
  client: net.Socket;
  /** Client-side protections (what the real client would hold). */
  cTx: RecordProtection;
  cRx: RecordProtection;
  /** Records the client received, decrypted in order. */
  next(): Promise<OpenedRecord>;
  clientEnded: Promise<void>;
  close(): void;
}

async function connect(version: TlsVersion, cipher: KernelCipher, leftoverFrom?: (cTx: RecordProtection) => Buffer): Promise<Peer> {
  const cSecret = Buffer.alloc(32, 0x11);
  const sSecret = Buffer.alloc(32, 0x22);
  const mk = (secret: Buffer, explicit: bigint | null): RecordProtection => version === 'TLSv1.3'
    ? RecordProtection.tls13(cipher, secret)
    : RecordProtection.tls12({ cipher, key: secret.subarray(0, cipher === 'AES_GCM_128' ? 16 : 32), writeIv: secret.subarray(0, cipher === 'CHACHA20_POLY1305' ? 12 : 4), seq: 0n, explicitNonce: explicit });
  const cTx = mk(cSecret, 7n);
  const cRx = mk(sSecret, null);
  const leftover = leftoverFrom ? leftoverFrom(cTx) : Buffer.alloc(0);
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const raw = await accepted;
  const tls13 = version === 'TLSv1.3';
  const reader = new RecordReader(RecordProtection.fromCryptoInfo(mk(cSecret, null).toCryptoInfo(), tls13 ? cSecret : undefined));
  reader.push(leftover);
  const alerts: Array<[number, number]> = [];
  const server = new RecordLayerStream({
    raw, fd: -1, native: null, version, cipher,
    tx: { side: 'js', protection: RecordProtection.fromCryptoInfo(mk(sSecret, 1000n).toCryptoInfo(), tls13 ? sSecret : undefined) },
    rx: { side: 'js', reader },
    rekeySupported: false, keyUpdateRateLimit: 10, allowHalfOpen: true,
    events: { peerAlert: (level, description) => alerts.push([level, description]) },
  });
  server.on('error', () => {});
  const framer = new RecordFramer();
  const queue: OpenedRecord[] = [];
  let wake: () => void = () => {};
  client.on('data', (d: Buffer) => {
    framer.push(d);
    for (let r = framer.take(); r; r = framer.take()) {
      const o = cRx.open(r.header, r.payload);
      if (!o) throw new Error('client could not open a server record');
      queue.push(o);
      if (o.type === ContentType.HANDSHAKE && o.data[0] === HandshakeType.KEY_UPDATE) cRx.keyUpdate();
    }
    wake();
  });
  const clientEnded = new Promise<void>((r) => client.on('end', () => r()));
  client.on('error', () => {});
  return {
    server, alerts, client, cTx, cRx, clientEnded,
    async next() {
      while (!queue.length) await new Promise<void>((r) => { wake = r; });
      return queue.shift() as OpenedRecord;
    },
    close() {
      client.destroy();
      server.destroy();
      srv.close();
    },
  };
}

const dataOf = (s: RecordLayerStream, n: number): Promise<Buffer> => new Promise((resolve) => {
  const chunks: Buffer[] = [];
  let got = 0;
  const on = (d: Buffer): void => {
    chunks.push(d);
    got += d.length;
    if (got >= n) { s.off('data', on); resolve(Buffer.concat(chunks)); }
  };
  s.on('data', on);
});

t.test('application data both ways; large writes are split into ≤ 16 KiB records', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  const got = dataOf(p.server, 5);
  p.client.write(p.cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('hello')));
  t.equal((await got).toString(), 'hello');
  p.server.write(Buffer.alloc(40_000, 7));
  const sizes = [(await p.next()).data.length, (await p.next()).data.length, (await p.next()).data.length];
  t.same(sizes, [16384, 16384, 40_000 - 32768]);
});

t.test('leftover (whole record + half of the next) is decrypted first, then the socket', async (t) => {
  let second: Buffer = Buffer.alloc(0);
  const p = await connect('TLSv1.3', 'CHACHA20_POLY1305', (cTx) => {
    const a = cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('first,'));
    second = cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('second'));
    return Buffer.concat([a, second.subarray(0, 9)]);
  });
  t.teardown(() => p.close());
  const got = dataOf(p.server, 12);
  p.client.write(second.subarray(9));
  t.equal((await got).toString(), 'first,second');
});

t.test('TLS 1.3 client KeyUpdate(update_requested): RX follows, the server answers update_not_requested then rekeys TX', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_256');
  t.teardown(() => p.close());
  p.client.write(p.cTx.seal(ContentType.HANDSHAKE, buildKeyUpdate(true)));
  p.cTx.keyUpdate();
  const got = dataOf(p.server, 5);
  p.client.write(p.cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('after')));
  t.equal((await got).toString(), 'after');
  const ku = await p.next();
  t.equal(ku.type, ContentType.HANDSHAKE);
  t.equal(ku.data.toString('hex'), '1800000100');
  p.server.write('under the new key');
  t.equal((await p.next()).data.toString(), 'under the new key');
  // The answer's request_update byte (0 = update_not_requested) is checked on the wire above.
  t.equal(p.server.stats().keyUpdatesIn, 1);
  t.equal(p.server.stats().keyUpdatesOut, 1);
});

t.test('TLS 1.3 KeyUpdate followed by data in the same record → fatal unexpected_message', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  const failed = new Promise<Error>((r) => p.server.once('error', r));
  p.client.write(p.cTx.seal(ContentType.HANDSHAKE, Buffer.concat([buildKeyUpdate(false), buildKeyUpdate(false)])));
  const alert = await p.next();
  t.same([...alert.data], [2, AlertDescription.UNEXPECTED_MESSAGE]);
  t.equal((await failed as Error & { code?: string }).code, 'ERR_KTLS_SIDECAR_KTLS_CONTROL');
});

t.test('TLS 1.2 renegotiation attempt (ClientHello) is refused with a no_renegotiation warning; the connection goes on', async (t) => {
  const p = await connect('TLSv1.2', 'AES_GCM_128');
  t.teardown(() => p.close());
  p.client.write(p.cTx.seal(ContentType.HANDSHAKE, buildHandshakeMessage(HandshakeType.CLIENT_HELLO, Buffer.alloc(40, 3))));
  const alert = await p.next();
  t.equal(alert.type, ContentType.ALERT);
  t.same([...alert.data], [1, AlertDescription.NO_RENEGOTIATION]);
  const got = dataOf(p.server, 4);
  p.client.write(p.cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('more')));
  t.equal((await got).toString(), 'more');
  t.equal(p.server.stats().renegotiationsRefused, 1);
});

t.test('close_notify from the client ends the stream; end() sends close_notify and FIN', async (t) => {
  const p = await connect('TLSv1.2', 'CHACHA20_POLY1305');
  t.teardown(() => p.close());
  const ended = new Promise<void>((r) => p.server.once('end', () => r()));
  p.server.resume();
  p.client.write(p.cTx.seal(ContentType.ALERT, buildAlert(1, AlertDescription.CLOSE_NOTIFY)));
  await ended;
  t.equal(p.server.stats().closeNotifyIn, true);
  p.server.end();
  const cn = await p.next();
  t.same([...cn.data], [1, AlertDescription.CLOSE_NOTIFY]);
  await p.clientEnded;
  t.equal(p.server.stats().truncated, false);
  t.equal(p.server.stats().closeNotifyOut, true);
});

t.test('a record that does not authenticate → fatal bad_record_mac and a coded error', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  const failed = new Promise<Error>((r) => p.server.once('error', r));
  const rec = p.cTx.seal(ContentType.APPLICATION_DATA, Buffer.from('x'));
  rec[rec.length - 1] = (rec[rec.length - 1] ?? 0) ^ 1;
  p.client.write(rec);
  t.same([...(await p.next()).data], [2, AlertDescription.BAD_RECORD_MAC]);
  t.match((await failed).message, /failed authentication/);
});

t.test('a fatal alert from the peer destroys the stream with a coded error', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  const failed = new Promise<Error>((r) => p.server.once('error', r));
  p.client.write(p.cTx.seal(ContentType.ALERT, buildAlert(2, AlertDescription.HANDSHAKE_FAILURE)));
  t.match((await failed).message, /fatal alert 40/);
  t.same(p.alerts, [[2, 40]]);
  t.equal(p.server.stats().alertsIn, 1);
});

t.test('FIN without close_notify is reported as truncated', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  const ended = new Promise<void>((r) => p.server.once('end', () => r()));
  p.server.resume();
  p.client.end();
  await ended;
  t.equal(p.server.stats().truncated, true);
});

t.test('TLS 1.3 server KeyUpdate(update_requested) behind pending data; TX moves to the next key', async (t) => {
  const p = await connect('TLSv1.3', 'AES_GCM_128');
  t.teardown(() => p.close());
  p.server.write('before');
  p.server.keyUpdate(true);
  p.server.write('after');
  t.equal((await p.next()).data.toString(), 'before');
  const ku = await p.next();
  t.equal(ku.type, ContentType.HANDSHAKE);
  t.equal(ku.data.toString('hex'), '1800000101', 'update_requested');
  t.equal((await p.next()).data.toString(), 'after', 'opened with the next key');
  t.equal(p.server.stats().keyUpdatesOut, 1);
});
