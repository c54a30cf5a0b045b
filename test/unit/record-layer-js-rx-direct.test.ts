// RX in JS with TX in the kernel (`tx` mode), as install.ts builds it after the
// hand-off: the production RecordLayerStream reads the client's ciphertext from
// the fd through the addon's poller and recv, not through libuv (whose reads
// the hand-off stopped), and opens it with the JS reader. On plain loopback TCP
// (no kTLS on the host: the "kernel" TX writes plaintext, which the client
// here reads as it is). The witness that libuv stays out: the raw socket's
// bytesRead (libuv's count) stays 0 while every byte arrives. The same mode in
// real kernels: test/kernel (tx matrix, KeyUpdate, hardening suites).
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { type KtlsNative, native as loadNative, nativeStatus, socketFd } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { AlertDescription, AlertLevel, ContentType, buildAlert } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';
import { RecordReader } from '../../proxy/tls/records.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;

/** The real addon with the kTLS-only option calls played on plain TCP (TX "in the kernel" is a plain write). */
function plainKernel(real: KtlsNative): KtlsNative {
  return Object.assign(Object.create(real) as KtlsNative, {
    getCryptoInfo: () => ({ version: 'TLSv1.3', cipher: 'AES_GCM_128', recSeq: 0n }),
    setCryptoInfo: () => undefined,
  });
}

interface Conn {
  stream: RecordLayerStream;
  raw: net.Socket;
  client: net.Socket;
  /** The client's sending protection: what a real client would seal its records with. */
  cTx: RecordProtection;
}

async function connect(t: Test, leftover?: (cTx: RecordProtection) => Buffer): Promise<Conn> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect({ port: (srv.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => client.once('connect', r));
  const raw = await accepted;
  srv.close();
  const secret = Buffer.alloc(32, 0x5a);
  const cTx = RecordProtection.tls13('AES_GCM_128', secret);
  const reader = new RecordReader(RecordProtection.tls13('AES_GCM_128', secret));
  if (leftover) reader.push(leftover(cTx));
  // What the engine does at the hand-off: libuv stops reading the fd.
  stopReading(raw);
  const fd = socketFd(raw);
  if (fd === null) throw new Error('no fd');
  const stream = new RecordLayerStream({
    raw, fd, native: plainKernel(loadNative()), version: 'TLSv1.3', cipher: 'AES_GCM_128',
    tx: { side: 'kernel', keys: null }, rx: { side: 'js', reader },
    rekeySupported: false, keyUpdateRateLimit: 10, allowHalfOpen: true,
  });
  client.on('error', () => {});
  t.teardown(() => {
    client.destroy();
    stream.destroy();
  });
  return { stream, raw, client, cTx };
}

/** `data` as application-data records of at most 16 KiB, sealed by the client. */
function seal(cTx: RecordProtection, data: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let o = 0; o < data.length; o += 16384) out.push(cTx.seal(ContentType.APPLICATION_DATA, data.subarray(o, o + 16384)));
  return Buffer.concat(out);
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Everything the stream delivers until its end. */
function collect(stream: RecordLayerStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

/** Writes `bytes` in pieces that cut records anywhere (a record's header and body in different reads). */
async function dribble(client: net.Socket, bytes: Buffer): Promise<void> {
  for (let o = 0; o < bytes.length;) {
    const n = 1 + ((o * 7919) % 3001);
    client.write(bytes.subarray(o, o + n));
    o += n;
    if (o % 5 === 0) await new Promise((r) => setImmediate(r));
  }
}

t.test('records cut at any byte arrive exact, read by the addon and not libuv', { skip }, async (t) => {
  const c = await connect(t);
  const data = randomBytes(300_000);
  const got = collect(c.stream);
  await dribble(c.client, seal(c.cTx, data));
  c.client.end();
  const out = await got;
  t.equal(out.length, data.length);
  t.equal(sha(out), sha(data), 'sha256 matches');
  t.equal(c.raw.bytesRead, 0, 'libuv read nothing from the fd');
  t.equal(c.stream.stats().rxBytesUserspace, data.length, 'counted as opened in userspace');
});

t.test('the leftover of the hand-off comes first, then what the fd brings', { skip }, async (t) => {
  const first = Buffer.from('GET / HTTP/1.1\r\n');
  const rest = randomBytes(40_000);
  const c = await connect(t, (cTx) => seal(cTx, first));
  const got = collect(c.stream);
  c.client.end(seal(c.cTx, rest));
  t.equal(sha(await got), sha(Buffer.concat([first, rest])));
});

t.test('backpressure: a reader that stops holds the bytes in the socket, and gets them all later', { skip }, async (t) => {
  const c = await connect(t);
  const data = randomBytes(4 * 1024 * 1024);
  c.stream.pause();
  c.client.end(seal(c.cTx, data));
  await new Promise((r) => setTimeout(r, 200));
  t.ok(c.stream.readableLength <= 1024 * 1024, `buffered ${c.stream.readableLength} bytes while paused, not the whole 4 MiB`);
  const got = collect(c.stream);
  c.stream.resume();
  t.equal(sha(await got), sha(data));
  t.equal(c.raw.bytesRead, 0);
});

t.test('close_notify: the stream ends after the data before it', { skip }, async (t) => {
  const c = await connect(t);
  const data = randomBytes(10_000);
  const got = collect(c.stream);
  c.client.write(Buffer.concat([seal(c.cTx, data), c.cTx.seal(ContentType.ALERT, buildAlert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY))]));
  t.equal(sha(await got), sha(data));
  t.equal(c.stream.stats().closeNotifyIn, true);
});

t.test('a client reset destroys the stream with ECONNRESET, as libuv would report it', { skip }, async (t) => {
  const c = await connect(t);
  const err = new Promise<NodeJS.ErrnoException>((r) => c.stream.once('error', r));
  const closed = new Promise((r) => c.stream.once('close', r));
  c.client.write(seal(c.cTx, randomBytes(100)));
  await new Promise((r) => setTimeout(r, 50));
  c.client.resetAndDestroy();
  t.equal((await err).code, 'ECONNRESET');
  await closed;
  t.ok(c.raw.destroyed, 'the raw socket is closed with it');
});

t.test('a record that fails authentication is fatal: a bad_record_mac alert goes out, nothing of it is delivered', { skip }, async (t) => {
  const c = await connect(t);
  const good = randomBytes(1000);
  const bad = seal(c.cTx, randomBytes(1000));
  bad[bad.length - 1]! ^= 1;
  const chunks: Buffer[] = [];
  c.stream.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise((r) => c.stream.once('close', r));
  c.stream.on('error', () => {});
  const fromServer: Buffer[] = [];
  c.client.on('data', (d: Buffer) => fromServer.push(d));
  c.client.write(Buffer.concat([seal(c.cTx, good), bad]));
  await closed;
  // The stream is destroyed in the read that found the bad record: what it delivered is at most the good record.
  const delivered = Buffer.concat(chunks);
  t.ok(delivered.length <= good.length && good.subarray(0, delivered.length).equals(delivered), 'nothing unauthenticated delivered');
  // TX is "in the kernel" here (plain writes): the alert record went out as its plaintext body.
  await new Promise((r) => setTimeout(r, 50));
  t.ok(Buffer.concat(fromServer).includes(Buffer.from([AlertLevel.FATAL, AlertDescription.BAD_RECORD_MAC])), 'fatal bad_record_mac sent');
});
