// Kernel TX writes as one send(2) from the addon (KernelTx.send), and the
// record layer as the fronts' socket itself, on plain loopback TCP with the
// real addon (test/helpers/plain-kernel.ts: no kTLS on the host; the
// kernel's records are the bytes themselves). A write that fits goes out
// without a libuv write request (the raw socket's bytesWritten stays 0);
// what the socket buffer cannot take goes through libuv, in order, and later
// writes wait behind it; a send failure is classified once (stage `write`)
// and a reset peer ends the connection as a failed libuv write did.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import t, { type Test } from 'tap';
import { NativeSyscallError, native as loadNative, nativeStatus } from '../../native/index.js';
import { plaintextOf } from '../../proxy/connection/plain-connection.js';
import { closeReasonOf } from '../../proxy/plaintext-socket.js';
import type { KtlsErrorClass } from '../../proxy/ktls/errno.js';
import { KernelTx } from '../../proxy/record-layer/kernel.js';
import { ErrorCodes } from '../../proxy/errors.js';
import { fdOf, kernelCalls, plainKernel, plainKernelStream } from '../helpers/plain-kernel.js';
import { loopbackPair } from '../helpers/socket-pair.js';
import { hashReads } from '../helpers/hash-reader.js';
import { patternBytes } from '../helpers/upstream.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const written = (s: NodeJS.WritableStream, chunk: Buffer): Promise<void> =>
  new Promise((resolve, reject) => s.write(chunk, (err) => (err ? reject(err) : resolve())));

t.test('a write that fits is one send(2): no libuv write request, one send for head + body', { skip }, async (t) => {
  const { server, client } = await loopbackPair(t);
  const calls = kernelCalls();
  const s = plainKernelStream(server, { calls });
  s.on('error', (err) => t.fail(String(err)));
  const got = hashReads(client);
  const one = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
  await written(s, one);
  // A response's head and body as node:http writes them: one writev.
  s.cork();
  s.write(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n'));
  const body = patternBytes(1024, 1);
  const last = written(s, body);
  s.uncork();
  await last;
  await got.until(one.length + 40 + 1024);
  t.equal(calls.send, 2, 'two sends: one per write batch');
  t.equal(calls.sendShort, 0);
  t.equal(server.bytesWritten, 0, 'libuv wrote nothing');
  t.equal(s.bytesOut, got.bytes(), 'bytesOut counts what left');
  s.destroy();
});

t.test('socket buffer full: the rest goes through libuv, later writes wait behind it, nothing lost or reordered', { skip }, async (t) => {
  const { server, client } = await loopbackPair(t);
  const calls = kernelCalls();
  const s = plainKernelStream(server, { calls });
  s.on('error', (err) => t.fail(String(err)));
  client.pause(); // the peer reads nothing yet: the socket buffers fill
  const chunks = Array.from({ length: 64 }, (_, i) => patternBytes(128 * 1024 + i, i));
  const all = Buffer.concat(chunks);
  const done = Promise.all(chunks.map((c) => written(s, c)));
  await new Promise((r) => setTimeout(r, 200));
  t.ok(calls.sendShort >= 1, `the kernel took part of a write, or none (${calls.sendShort} short sends)`);
  t.ok(server.bytesWritten > 0, 'libuv took the rest');
  const got = hashReads(client);
  client.resume();
  await done;
  await got.until(all.length);
  t.equal(got.digest(), sha(all), 'every byte once, in write order');
  // Once libuv's queue is empty again, a small write is a direct send again.
  const before = { send: calls.send, libuv: server.bytesWritten };
  await written(s, Buffer.from('tail'));
  t.equal(calls.send, before.send + 1, 'direct again');
  t.equal(server.bytesWritten, before.libuv, 'libuv not involved');
  s.destroy();
});

/** A KernelTx over a live loopback socket with an addon whose send fails with `errno`. */
async function failingTx(t: Test, errno: string): Promise<{ tx: KernelTx; seen: KtlsErrorClass[] }> {
  const { server } = await loopbackPair(t);
  const real = loadNative();
  const code = errno === 'EPIPE' ? 32 : errno === 'ECONNRESET' ? 104 : 5;
  const native = Object.assign(plainKernel(real), {
    sendPlain: (): number => {
      throw new NativeSyscallError(code, 'send');
    },
  });
  const seen: KtlsErrorClass[] = [];
  const tx = new KernelTx({ raw: server, fd: fdOf(server), native, events: { syscallError: (c) => seen.push(c) } }, null, false, 100, () => false);
  return { tx, seen };
}

for (const errno of ['EPIPE', 'ECONNRESET']) {
  t.test(`send fails with ${errno}: the write's error carries it (a peer reset), counted once under stage write`, { skip }, async (t) => {
    const { tx, seen } = await failingTx(t, errno);
    const err = await new Promise<Error | null | undefined>((resolve) => tx.writeData([Buffer.from('x')], resolve));
    t.match(err, { code: errno }, 'the close path sees a peer reset');
    t.same(seen, [{ errno, kind: 'closed', stage: 'write' }]);
  });
}

t.test('send fails with EIO: a kTLS error with the errno, never key material, counted once', { skip }, async (t) => {
  const { tx, seen } = await failingTx(t, 'EIO');
  const err = await new Promise<Error | null | undefined>((resolve) => tx.writeData([Buffer.from('x'), Buffer.from('y')], resolve));
  t.match(err, { code: ErrorCodes.KTLS_CONTROL, message: /kernel TLS send failed: EIO/ });
  t.same(seen, [{ errno: 'EIO', kind: 'other', stage: 'write' }]);
});

/** Sends `request` on `client`; resolves with the response once its head and a `bodyBytes` body are in. */
function exchange(client: net.Socket, request: string, bodyBytes: number): Promise<{ head: string; body: Buffer; all: Buffer }> {
  let got = Buffer.alloc(0);
  return new Promise((resolve) => {
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0 || got.length < end + 4 + bodyBytes) return;
      client.off('data', onData);
      resolve({ head: got.subarray(0, end).toString(), body: got.subarray(end + 4), all: got });
    };
    client.on('data', onData);
    client.write(request);
  });
}

t.test('node:http over the record layer itself: addresses, byte counts, keep-alive idle close', { skip }, async (t) => {
  const { server, client } = await loopbackPair(t);
  const s = plainKernelStream(server);
  const facts = { remoteAddress: '192.0.2.7', remotePort: 4321, localAddress: '127.0.0.1', localPort: 8443, alpn: 'http/1.1' };
  const { stream, bytes } = plaintextOf(s, facts);
  t.equal(stream, s, 'no wrapper: the front gets the record layer');
  t.equal(bytes, s);
  const body = patternBytes(1024, 7);
  let remote = '';
  const hs = http.createServer({ keepAliveTimeout: 300 }, (req, res) => {
    remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  hs.emit('connection', stream);
  const request = 'GET /1k HTTP/1.1\r\nhost: x\r\n\r\n';
  const res = await exchange(client, request, body.length);
  t.match(res.head, /^HTTP\/1\.1 200/);
  t.equal(sha(res.body), sha(body), 'the body arrived');
  t.equal(remote, '192.0.2.7:4321', "node:http sees the connection's addresses (the PROXY header's, when one came)");
  t.equal(s.bytesIn, request.length);
  t.equal(s.bytesOut, res.all.length);
  const t0 = Date.now();
  await new Promise((r) => s.once('close', r));
  const idle = Date.now() - t0;
  // node:http adds its keepAliveTimeoutBuffer (1 s in Node 24) to the timeout it arms.
  t.ok(idle >= 250 && idle < 3000, `closed by the socket's idle timer (${idle} ms; keep-alive timeout 300 ms)`);
  t.equal(closeReasonOf(s), 'idle_timeout');
  hs.close();
});
