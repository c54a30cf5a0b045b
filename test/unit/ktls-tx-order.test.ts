// RecordLayerStream TX ordering and backpressure with kernel TX: a control
// record (sendmsg, which bypasses libuv's write queue) must leave after every
// byte written before it — even while those bytes are still queued in libuv —
// and before every byte written after it; write() must report a full socket.
// Guards any change to how data writes reach the raw socket (e.g. several
// raw writes in flight).
//
// No kTLS here: TX is "in the kernel" through a fake native whose sendRecord
// writes a marker straight to the fd (fs.writeSync, like sendmsg: past
// libuv). The peer reads nothing until the writer has queued far more than
// the socket buffers hold, so raw writes are still pending in libuv when
// the control records are queued; a marker that overtook them would show up
// inside the data.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import type { KtlsNative } from '../../native/index.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { RecordReader } from '../../proxy/tls/records.js';
import { ContentType } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';

const MARK = 0x7c; // '|': never in the data below

function fakeNative(fd: () => number, log: string[]): KtlsNative {
  const fake = {
    getCryptoInfo: () => ({ version: 'TLSv1.3', cipher: 'AES_GCM_128', recSeq: 0n }),
    setCryptoInfo: (_fd: number, dir: string) => log.push(`set:${dir}`),
    sendRecord: (_fd: number, type: number, data: Buffer): number => {
      const marker = Buffer.from(`|${type}:${data.toString('hex')}|`);
      try {
        // EAGAIN on a full buffer; a partial write of a ~20-byte marker does not happen in practice.
        const n = fs.writeSync(fd(), marker);
        if (n !== marker.length) throw new Error('partial marker write');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return -1;
        throw err;
      }
      log.push(`record:${type}`);
      return data.length;
    },
    // A data write straight to the fd (send(2) past libuv, as KernelTx does while libuv holds nothing queued).
    sendPlain: (_fd: number, data: Buffer): number => {
      try {
        return fs.writeSync(fd(), data);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return -1;
        throw err;
      }
    },
  };
  return fake as unknown as KtlsNative;
}

async function pair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect((srv.address() as AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const server = await accepted;
  return { server, client, close: () => srv.close() };
}

/** Split what the peer received into data runs and markers, in order. */
function parse(bytes: Buffer): Array<{ data: number; fill: number } | { record: string }> {
  const out: Array<{ data: number; fill: number } | { record: string }> = [];
  let i = 0;
  while (i < bytes.length) {
    if (bytes[i] === MARK) {
      const end = bytes.indexOf(MARK, i + 1);
      out.push({ record: bytes.subarray(i + 1, end).toString() });
      i = end + 1;
      continue;
    }
    const fill = bytes[i]!;
    let j = i;
    while (j < bytes.length && bytes[j] === fill) j++;
    const last = out[out.length - 1];
    if (last && 'data' in last && last.fill === fill) last.data += j - i;
    else out.push({ data: j - i, fill });
    i = j;
  }
  return out;
}

/**
 * A connected pair whose server side is a TX-in-kernel RecordLayerStream over a
 * fake native (see fakeNative). The client starts paused: the raw socket
 * fills up and writes queue in libuv.
 */
async function kernelTxStream(
  t: Test,
  log: string[],
  extra: Partial<ConstructorParameters<typeof RecordLayerStream>[0]> = {},
): Promise<{ stream: RecordLayerStream; client: net.Socket }> {
  const { server, client, close } = await pair();
  t.teardown(() => {
    client.destroy();
    close();
  });
  client.pause();
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const secret = randomBytes(32);
  const stream = new RecordLayerStream({
    raw: server,
    fd,
    native: fakeNative(() => fd, log),
    version: 'TLSv1.3',
    cipher: 'AES_GCM_128',
    tx: { side: 'kernel', keys: RecordProtection.tls13('AES_GCM_128', secret) },
    rx: { side: 'js', reader: new RecordReader(RecordProtection.tls13('AES_GCM_128', secret)) },
    rekeySupported: true,
    keyUpdateRateLimit: 100,
    ...extra,
  });
  stream.on('error', (err) => t.fail(String(err)));
  return { stream, client };
}

t.test('control records wait for every earlier raw write, and later data waits for them', async (t) => {
  const log: string[] = [];
  const { stream, client } = await kernelTxStream(t, log, {
    // Every data write crosses the key usage limit: our KeyUpdate follows each one.
    txKeyRecordLimit: 0n,
    keyUsageCheckWrites: 1,
  });

  // Far more than the loopback socket buffers hold: most of `a` stays queued in libuv.
  const a = Buffer.alloc(24 * 1024 * 1024, 0x61);
  const b = Buffer.alloc(64 * 1024, 0x62);
  const c = Buffer.alloc(1000, 0x63);
  const writes: string[] = [];
  stream.write(a, () => writes.push('a'));
  stream.write(b, () => writes.push('b'));
  stream.write(c, () => writes.push('c'));
  stream.end();

  // Let the writes and the queued control records settle against the full buffer, then read.
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(log.includes('record:22'), 'no KeyUpdate went out while the data before it was still queued');
  const received: Buffer[] = [];
  client.on('data', (d: Buffer) => received.push(d));
  const ended = new Promise((r) => client.once('end', r));
  const finished = new Promise((r) => stream.once('finish', r));
  client.resume();
  await ended;
  await finished;

  const got = parse(Buffer.concat(received));
  const ku = `${ContentType.HANDSHAKE}:${Buffer.from([24, 0, 0, 1, 0]).toString('hex')}`;
  t.same(got, [
    { data: a.length, fill: 0x61 },
    { record: ku },
    // b and c were both buffered while a was queued: one _writev, one KeyUpdate after it.
    { data: b.length, fill: 0x62 },
    { data: c.length, fill: 0x63 },
    { record: ku },
    { record: `${ContentType.ALERT}:0100` },
  ], 'data, each KeyUpdate and the close_notify leave in write order');
  t.same(writes, ['a', 'b', 'c'], 'write callbacks in order');
  t.equal(log.filter((l) => l === 'set:tx').length, 2, 'TX rekeyed after each KeyUpdate');
  const s = stream.stats();
  t.equal(s.txBytesKernel, a.length + b.length + c.length, 'byte counter');
  t.equal(s.keyUpdatesOut, 2);
  t.ok(s.closeNotifyOut);
});

t.test('backpressure: write() reports a full raw socket, drain follows', async (t) => {
  const { stream, client } = await kernelTxStream(t, []);
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  let written = 0;
  while (stream.write(chunk)) {
    written += chunk.length;
    if (written > 256 * 1024 * 1024) break;
  }
  t.ok(written < 64 * 1024 * 1024, `write() returned false after ${written} bytes with a peer that does not read`);
  const drained = new Promise((r) => stream.once('drain', r));
  let received = 0;
  client.on('data', (d: Buffer) => (received += d.length));
  client.resume();
  await drained;
  const ended = new Promise((r) => client.once('end', r));
  stream.end();
  await ended;
  // Everything written (plus the close_notify marker) arrived.
  t.equal(received, written + chunk.length + `|${ContentType.ALERT}:0100|`.length);
});
