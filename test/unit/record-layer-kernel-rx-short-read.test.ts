// KernelRx's wakeups with the real poller on plain loopback TCP (the host has
// no kTLS: every recv is "application data", as in record-layer-splice-stream).
// Where the probe found that poll() waits for whole records (rxWholeRecordPoll),
// a short data read ends the wakeup and the poll stays level-triggered: one
// recvmsg per small message instead of two (the second only said EAGAIN).
// Elsewhere (6.1) RX still reads until EAGAIN and waits for a new edge. Either
// way nothing is lost: bytes that arrive together, data then EOF, all arrive.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import t from 'tap';
import { type KtlsNative, native as loadNative, nativeStatus, socketFd } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { ContentType } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';
import { loopbackPair } from '../helpers/socket-pair.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;

/** The real addon (poller, recvPlain) with the kTLS-only calls played on plain TCP; counts recvRecord calls. */
function plainKernel(real: KtlsNative, calls: { recv: number; again: number }): KtlsNative {
  return Object.assign(Object.create(real) as KtlsNative, {
    getCryptoInfo: () => ({ version: 'TLSv1.3', cipher: 'AES_GCM_128', recSeq: 0n }),
    setCryptoInfo: () => undefined,
    sendRecord: (_fd: number, _type: number, data: Buffer): number => data.length,
    recvRecord: (rfd: number, buf: Buffer) => {
      calls.recv++;
      const r = real.recvPlain(rfd, buf);
      if (r === null) {
        calls.again++;
        return null;
      }
      return r.eof || r.bytes === 0 ? { type: 0, bytes: 0, eof: true } : { type: ContentType.APPLICATION_DATA, bytes: r.bytes, eof: false };
    },
  });
}

function kernelRx(raw: net.Socket, wholeRecordPoll: boolean, calls: { recv: number; again: number }): RecordLayerStream {
  stopReading(raw);
  const fd = socketFd(raw);
  if (fd === null) throw new Error('no fd');
  return new RecordLayerStream({
    raw, fd, native: plainKernel(loadNative(), calls), version: 'TLSv1.3', cipher: 'AES_GCM_128',
    tx: { side: 'kernel', keys: RecordProtection.tls13('AES_GCM_128', randomBytes(32)) }, rx: { side: 'kernel', keys: null },
    rekeySupported: true, keyUpdateRateLimit: 100, allowHalfOpen: true, rxWholeRecordPoll: wholeRecordPoll,
  });
}

const MESSAGES = 20;

for (const whole of [true, false]) {
  t.test(`small messages, rxWholeRecordPoll ${whole}: ${whole ? 'one recvmsg each' : 'read until EAGAIN'}, all delivered`, { skip }, async (t) => {
    const { server, client } = await loopbackPair(t);
    const calls = { recv: 0, again: 0 };
    const s = kernelRx(server, whole, calls);
    const got: Buffer[] = [];
    let wake: (() => void) | null = null;
    s.on('data', (d: Buffer) => {
      got.push(d);
      wake?.();
    });
    for (let i = 0; i < MESSAGES; i++) {
      const arrived = new Promise<void>((r) => (wake = r));
      client.write(Buffer.alloc(1024, i));
      await arrived;
      await new Promise((r) => setTimeout(r, 5)); // the poller's turn after the data
    }
    t.equal(Buffer.concat(got).length, MESSAGES * 1024, 'every byte delivered');
    if (whole) {
      t.equal(calls.again, 0, `no recvmsg that only said EAGAIN (${calls.recv} in all)`);
      t.equal(calls.recv, MESSAGES, 'one recvmsg per message');
    } else {
      t.ok(calls.again >= MESSAGES, `each wakeup read until EAGAIN (${calls.again} of ${calls.recv})`);
    }
    // Data and EOF queued together: the level-triggered poll calls again for the EOF.
    const ended = new Promise((r) => s.once('end', r));
    s.resume();
    client.end(Buffer.alloc(3000, 7));
    await ended;
    t.equal(Buffer.concat(got).length, MESSAGES * 1024 + 3000, 'the last bytes, then the end');
    s.destroy();
  });
}
