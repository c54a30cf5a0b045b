// RecordLayerStream lending a direction to the REAL splice pump (the addon's
// createSplicePump) on plain loopback TCP: no kTLS on the host, so the
// kernel side is played by plain TCP (TX: the kernel's records are the bytes
// themselves; RX: recvRecord is a plain recv, every read "application data"),
// and a control record is a marker written straight to the fd (as sendmsg
// would, past libuv). What this proves is the JS around the pump: TX order
// (earlier writes, then spliced bytes, a control record queued during a run
// between two runs, close_notify after the upstream's EOF), byte counts, the
// RX flush before the first spliced byte, the peer's EOF, and that the pump
// is released before a socket closes. The kernel path: test/kernel/sidecar-tcp-splice*.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { native as loadNative, nativeStatus } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import type { SpliceOutcome } from '../../proxy/record-layer/splice.js';
import type { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { ContentType } from '../../proxy/tls/control.js';
import { fdOf, plainKernelStream } from '../helpers/plain-kernel.js';
import { loopbackPair } from '../helpers/socket-pair.js';
import { patternBytes } from '../helpers/upstream.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;

function collect(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks))));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Like the hand-off, control records as markers on the wire, lending allowed. */
const stream = (raw: net.Socket): RecordLayerStream => plainKernelStream(raw, { markers: true }, { splice: true });

t.test('TX lend with the real pump: earlier writes, spliced bytes, a KeyUpdate between runs, close_notify last', { skip }, async (t) => {
  const client = await loopbackPair(t); // the TLS peer
  const up = await loopbackPair(t); // up.server = the upstream socket the sidecar reads
  const s = stream(client.server);
  s.on('error', (err) => t.fail(String(err)));
  const received = collect(client.client);
  const early = Buffer.alloc(3 * 1024 * 1024, 0x61); // far more than the socket buffers: still queued in libuv
  s.write(early);
  t.ok(s.canSplice('tx'), 'TX can be lent');
  const body = patternBytes(9 * 1024 * 1024 + 7, 3);
  stopReading(up.server); // what the front does before lending TX
  const ended = new Promise<SpliceOutcome>((resolve) => s.spliceTx(fdOf(up.server), resolve));
  up.client.end(body);
  // During the first run: our KeyUpdate must go out between two runs, never inside a write of `early`.
  setTimeout(() => s.keyUpdate(false), 5);
  const o = await ended;
  t.same(o, { end: 'eof' }, 'the upstream EOF ended the lend');
  s.end();
  const got = await received;
  const ku = Buffer.from(`|${ContentType.HANDSHAKE}:${Buffer.from([24, 0, 0, 1, 0]).toString('hex')}|`);
  const cn = Buffer.from(`|${ContentType.ALERT}:0100|`);
  t.same(got.subarray(0, early.length), early, 'every earlier write first');
  const rest = got.subarray(early.length);
  const k = rest.indexOf(ku);
  t.ok(k >= 0, 'our KeyUpdate went out');
  const data = Buffer.concat([rest.subarray(0, k), rest.subarray(k + ku.length, rest.length - cn.length)]);
  t.equal(sha(data), sha(body), 'spliced bytes complete and in order around the KeyUpdate');
  t.same(rest.subarray(rest.length - cn.length), cn, 'close_notify last');
  const st = s.stats();
  t.equal(st.txBytesSpliced, body.length, 'spliced count');
  t.equal(st.txBytesKernel, early.length + body.length, 'every byte counted as kernel TX');
  t.equal(s.splicedOut, body.length);
  t.equal(st.keyUpdatesOut, 1);
});

t.test('RX lend with the real pump: what JS read goes first, then the pump; the peer FIN ends it', { skip }, async (t) => {
  const client = await loopbackPair(t);
  const up = await loopbackPair(t); // up.client = our upstream socket, up.server = the upstream app
  const s = stream(client.server);
  s.on('error', (err) => t.fail(String(err)));
  const atUpstream = collect(up.server);
  const first = Buffer.from('read by JS before the lend|');
  client.client.write(first);
  // The stream reads it through its own path (poller + recvRecord) and holds it: nobody consumes yet.
  s.pause();
  await new Promise((r) => setTimeout(r, 100));
  t.ok(s.readableLength >= first.length, 'decrypted in JS and buffered before the lend');
  s.on('data', (d: Buffer) => up.client.write(d));
  const upstream = up.client;
  const ended = new Promise<SpliceOutcome>((resolve) => {
    s.spliceRx(fdOf(upstream), (cb) => {
      if (upstream.writableLength === 0) cb();
      else upstream.write(Buffer.alloc(0), () => cb());
    }, resolve);
  });
  s.once('end', () => upstream.end());
  s.resume(); // a flowing reader, like the front's pipe: it sees the end
  const body = patternBytes(5 * 1024 * 1024 + 3, 5);
  client.client.end(body);
  const o = await ended;
  t.same(o, { end: 'eof' }, 'the peer FIN ended RX');
  const got = await atUpstream;
  t.equal(sha(got), sha(Buffer.concat([first, body])), 'JS bytes first, then every spliced byte, in order');
  t.equal(s.splicedIn, body.length, 'spliced count');
  const st = s.stats();
  t.equal(st.rxBytesSpliced, body.length);
  t.equal(st.rxBytesKernel, first.length + body.length);
  t.ok(st.truncated, 'a FIN without close_notify');
});

t.test('a socket destroyed mid-run: the pump is released first, no callback, counts kept', { skip }, async (t) => {
  const client = await loopbackPair(t);
  const up = await loopbackPair(t);
  const s = stream(client.server);
  s.on('error', () => undefined);
  let outcome: SpliceOutcome | null = null;
  stopReading(up.server);
  const fds = (): number => fs.readdirSync('/proc/self/fd').length;
  const idle = (): number => loadNative().splicePipesIdle();
  const before = { fds: fds(), idle: idle() };
  s.spliceTx(fdOf(up.server), (o) => (outcome = o));
  const chunk = Buffer.alloc(1024 * 1024, 0x62);
  let sent = 0;
  client.client.on('data', () => undefined);
  while (sent < 8 * chunk.length) {
    up.client.write(chunk);
    sent += chunk.length;
  }
  await new Promise((r) => setTimeout(r, 50));
  const moved = s.splicedOut;
  t.ok(moved > 0, `bytes moved live (${moved})`);
  client.server.destroy(); // the raw socket goes (as Node does after a read error)
  t.ok(s.destroyed || (await new Promise((r) => s.once('close', r)), true));
  await new Promise((r) => setTimeout(r, 50));
  t.equal(outcome, null, 'a closed pump calls nothing back');
  // The raw socket is gone; the pump's pipe is closed (or pooled empty by the addon).
  t.equal(fds(), before.fds - 1 + 2 * (idle() - before.idle), 'no fd left behind');
  t.ok(s.splicedOut >= moved, 'the bytes of the cut run stay counted');
});

t.test('tcp front over the real pump: bytes JS read before the lends, then spliced, in order both ways', { skip }, async (t) => {
  const { plaintextOf } = await import('../../proxy/connection/plain-connection.js');
  const { TcpSplice } = await import('../../proxy/fronts/tcp-splice.js');
  const client = await loopbackPair(t);
  const s = stream(client.server);
  const facts = { remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2 };
  // What the connection path gives the front: the record layer itself.
  const conn = plaintextOf(s, { ...facts, alpn: '' }).stream;
  t.equal(conn, s, 'the front gets the record layer as its socket');
  conn.on('error', (err) => t.fail(String(err)));
  conn.pause();
  // The client sends a lot before the upstream is even connected: JS reads (and buffers) part of it.
  const up = patternBytes(6 * 1024 * 1024 + 11, 9);
  client.client.write(up.subarray(0, 4 * 1024 * 1024));
  await new Promise((r) => setTimeout(r, 100));
  const app = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => app.close());
  const down = patternBytes(3 * 1024 * 1024 + 5, 4);
  const atApp = new Promise<Buffer>((resolve) => app.once('connection', (a) => {
    const chunks: Buffer[] = [];
    a.on('data', (d: Buffer) => chunks.push(d));
    a.on('end', () => {
      resolve(Buffer.concat(chunks));
      a.end(down);
    });
  }));
  const upstream = net.connect({ port: (app.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => upstream.once('connect', r));
  conn.pipe(upstream);
  const splice = TcpSplice.of(conn, upstream, { idleMs: 0, upstreamFailed: (r) => t.fail(`upstream failed: ${r}`) });
  t.ok(splice, 'the connection can splice');
  splice!.start();
  client.client.end(up.subarray(4 * 1024 * 1024));
  const atClient = collect(client.client);
  t.equal(sha(await atApp), sha(up), 'client → upstream: JS-read bytes first, then spliced ones, in order');
  const cn = Buffer.from(`|${ContentType.ALERT}:0100|`);
  const got = await atClient;
  t.equal(sha(got.subarray(0, got.length - cn.length)), sha(down), 'upstream → client spliced');
  t.same(got.subarray(got.length - cn.length), cn, 'then close_notify');
  await new Promise((r) => (conn.destroyed ? r(null) : conn.once('close', r)));
  t.ok(s.splicedIn > 0 && s.splicedIn < up.length, `part spliced (${s.splicedIn} of ${up.length}), part read by JS first`);
  t.equal(s.bytesIn, up.length, 'bytesIn counts every byte once');
  t.equal(s.bytesOut, down.length);
  t.equal(s.splicedOut, down.length);
  t.same({ in: s.stats().rxBytesKernel, out: s.stats().txBytesKernel }, { in: up.length, out: down.length }, 'the close line counts kernel bytes once too');
  upstream.destroy();
});

t.test('tcp front idle timeout over the pump: spliced traffic keeps it, silence ends it', { skip }, async (t) => {
  const { plaintextOf } = await import('../../proxy/connection/plain-connection.js');
  const { closeReasonOf } = await import('../../proxy/plaintext-socket.js');
  const { TcpSplice } = await import('../../proxy/fronts/tcp-splice.js');
  const client = await loopbackPair(t);
  const s = stream(client.server);
  s.on('error', () => undefined);
  const conn = plaintextOf(s, { remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2, alpn: '' }).stream;
  conn.on('error', () => undefined);
  const up = await loopbackPair(t);
  const upstream = up.client;
  conn.pipe(upstream);
  const splice = TcpSplice.of(conn, upstream, { idleMs: 400, upstreamFailed: () => t.fail('no upstream failure') });
  splice!.start();
  client.client.on('data', () => undefined);
  // 1.2 s of spliced bytes, one every 100 ms: socket timers see none of them, the watch does.
  const t0 = Date.now();
  for (let i = 0; i < 12; i++) {
    up.server.write(Buffer.alloc(1000, 0x61));
    await new Promise((r) => setTimeout(r, 100));
  }
  t.notOk(conn.destroyed, `alive after ${Date.now() - t0} ms of spliced traffic (idle 400 ms)`);
  t.ok(s.splicedOut >= 11_000, 'the traffic was spliced');
  const quiet = Date.now();
  await new Promise((r) => conn.once('close', r));
  const after = Date.now() - quiet;
  t.ok(after >= 300 && after < 3000, `closed ${after} ms after the last byte (idle 400 ms, checked every 100 ms)`);
  t.equal(closeReasonOf(conn), 'idle_timeout');
  t.ok(upstream.destroyed, 'the upstream went too');
});
