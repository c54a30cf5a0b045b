// KernelRx's wakeups with the real poller on plain loopback TCP (the host has
// no kTLS: every recv is "application data", as in record-layer-splice-stream).
// Where the probe found that poll() waits for whole records (rxWholeRecordPoll),
// a short data read ends the wakeup and the poll stays level-triggered: one
// recvmsg per small message instead of two (the second only said EAGAIN).
// Elsewhere (6.1) RX still reads until EAGAIN and waits for a new edge. Either
// way nothing is lost: bytes that arrive together, data then EOF, all arrive.
import type net from 'node:net';
import t from 'tap';
import { nativeStatus } from '../../native/index.js';
import type { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { type KernelCalls, kernelCalls, plainKernelStream } from '../helpers/plain-kernel.js';
import { loopbackPair } from '../helpers/socket-pair.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;

function kernelRx(raw: net.Socket, wholeRecordPoll: boolean, calls: KernelCalls): RecordLayerStream {
  return plainKernelStream(raw, { calls }, { rxWholeRecordPoll: wholeRecordPoll });
}

const MESSAGES = 20;

for (const whole of [true, false]) {
  t.test(`small messages, rxWholeRecordPoll ${whole}: ${whole ? 'one recvmsg each' : 'read until EAGAIN'}, all delivered`, { skip }, async (t) => {
    const { server, client } = await loopbackPair(t);
    const calls = kernelCalls();
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
