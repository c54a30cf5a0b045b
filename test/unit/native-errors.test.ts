// NativeSyscallError from the addon on this host: errno names and numbers, the syscall,
// no crash on bad input, key buffers zeroed on every path, no key bytes in messages.
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { closeSync, openSync } from 'node:fs';
import { NativeSyscallError, errnoName, native } from '../../native/index.js';
import type { CryptoInfo } from '../../native/crypto-info.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';
import { tlsUlpFromFiles } from '../helpers/host-ktls.js';

const BAD_FD = 2147483000; // far above any RLIMIT_NOFILE: always EBADF

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return null;
}

function info(): CryptoInfo {
  return { version: 'TLSv1.3', cipher: 'AES_GCM_128', key: Buffer.alloc(16, 0x41), iv: Buffer.alloc(8, 0x42), salt: Buffer.alloc(4, 0x43), recSeq: 7n };
}

async function pair(t: Test): Promise<{ a: net.Socket; b: net.Socket; afd: number }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const a = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  a.pause();
  await new Promise((resolve) => a.once('connect', resolve));
  const b = await accepted;
  server.close();
  t.teardown(() => {
    a.destroy();
    b.destroy();
  });
  const afd = (a as unknown as { _handle: { fd: number } })._handle.fd;
  return { a, b, afd };
}

t.test('errno names cover what kTLS returns', (t) => {
  t.same(
    [74, 127, 11, 95, 5, 16, 90, 92, 2, 22, 32, 104].map(errnoName),
    ['EBADMSG', 'EKEYEXPIRED', 'EAGAIN', 'EOPNOTSUPP', 'EIO', 'EBUSY', 'EMSGSIZE', 'ENOPROTOOPT', 'ENOENT', 'EINVAL', 'EPIPE', 'ECONNRESET'],
  );
  t.equal(errnoName(99999), 'E99999');
  t.end();
});

t.test('every syscall on a bad fd throws NativeSyscallError EBADF naming the syscall', (t) => {
  const n = native();
  const buf = Buffer.alloc(16);
  const cases: Array<[string, () => unknown]> = [
    ['setsockopt(TCP_ULP)', () => n.attachUlp(BAD_FD)],
    ['setsockopt(TLS_TX)', () => n.setCryptoInfo(BAD_FD, 'tx', info())],
    ['setsockopt(TLS_RX)', () => n.setCryptoInfo(BAD_FD, 'rx', info())],
    ['getsockopt(TLS_TX)', () => n.getCryptoInfo(BAD_FD, 'tx')],
    ['setsockopt(TLS_TX_ZEROCOPY_RO)', () => n.setOption(BAD_FD, 'TLS_TX_ZEROCOPY_RO', true)],
    ['getsockopt(TLS_RX_EXPECT_NO_PAD)', () => n.getOption(BAD_FD, 'TLS_RX_EXPECT_NO_PAD')],
    ['recvmsg', () => n.recvRecord(BAD_FD, buf)],
    ['sendmsg', () => n.sendRecord(BAD_FD, 23, buf)],
    ['recv', () => n.recvPlain(BAD_FD, buf)],
    ['epoll_ctl', () => n.createPoller(BAD_FD, () => undefined)],
    ['epoll_ctl', () => n.createSplicePump(BAD_FD, BAD_FD, () => undefined)],
  ];
  for (const [syscall, fn] of cases) {
    const e = caught(fn);
    t.ok(e instanceof NativeSyscallError, `${syscall}: a NativeSyscallError`);
    t.match(e, { code: 'EBADF', errno: 9, syscall, message: `${syscall} failed: EBADF` }, syscall);
  }
  t.end();
});

t.test('a non-socket fd gives ENOTSOCK', (t) => {
  const fd = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(fd));
  t.match(caught(() => native().recvRecord(fd, Buffer.alloc(4))), { code: 'ENOTSOCK', syscall: 'recvmsg' });
  t.match(caught(() => native().attachUlp(fd)), { code: 'ENOTSOCK', syscall: 'setsockopt(TCP_ULP)' });
  t.end();
});

t.test('wrong argument types throw TypeError, never crash', (t) => {
  const n = native();
  t.throws(() => n.attachUlp(-1), TypeError);
  t.throws(() => n.attachUlp(1.5), TypeError);
  t.throws(() => (n.attachUlp as (x: unknown) => void)('3'), TypeError);
  t.throws(() => (n.recvRecord as (a: unknown, b: unknown) => void)(0, 'not a buffer'), TypeError);
  t.throws(() => (n.getCryptoInfo as (a: unknown, b: unknown) => void)(0, 'up'), TypeError);
  t.throws(() => (n.setOption as (a: unknown, b: unknown, c: unknown) => void)(0, 'TLS_OTHER', true), TypeError);
  t.throws(() => n.sendRecord(0, 256, Buffer.alloc(1)), RangeError);
  t.end();
});

t.test('setCryptoInfo zeroes key, iv and salt even when the syscall fails', (t) => {
  const i = info();
  const e = caught(() => native().setCryptoInfo(BAD_FD, 'tx', i));
  t.match(e, { code: 'EBADF' });
  t.ok(i.key.every((b) => b === 0), 'key zeroed');
  t.ok(i.iv.every((b) => b === 0), 'iv zeroed');
  t.ok(i.salt.every((b) => b === 0), 'salt zeroed');
  t.end();
});

t.test('wrong key length: EINVAL before any syscall, buffers zeroed, no key bytes in the message', (t) => {
  const i = { ...info(), key: Buffer.alloc(15, 0x41) };
  const e = caught(() => native().setCryptoInfo(BAD_FD, 'tx', i));
  t.match(e, { code: 'EINVAL', syscall: 'setsockopt(TLS_TX)', message: /key has the wrong length/ });
  t.notMatch((e as Error).message, /41|QUFB|AAAA/, 'no key material in the message');
  t.ok(i.key.every((b) => b === 0), 'key zeroed');
  const chacha = { ...info(), cipher: 'CHACHA20_POLY1305' as const, key: Buffer.alloc(32), iv: Buffer.alloc(8), salt: Buffer.alloc(0) };
  t.match(caught(() => native().setCryptoInfo(BAD_FD, 'rx', chacha)), { code: 'EINVAL', message: /iv has the wrong length/ }, 'ChaCha20 needs a 12-byte iv');
  t.end();
});

// The kernel files, not tcp_available_ulp alone: that one is missing outside the host's network namespace.
t.test('on this host kernel the ULP answers as the kernel files say', async (t) => {
  const { afd } = await pair(t);
  const hasTls = tlsUlpFromFiles();
  const e = caught(() => native().attachUlp(afd));
  if (hasTls === true) t.equal(e, null, 'attached');
  else if (hasTls === null && e === null) t.pass('a loadable module: TCP_ULP loaded it and attached');
  else {
    t.match(e, { code: 'ENOENT', syscall: 'setsockopt(TCP_ULP)' }, 'no tls ULP: ENOENT');
    t.equal(classifyKtlsError(e, 'ulp').kind, 'unsupported');
    const g = caught(() => native().getCryptoInfo(afd, 'tx'));
    t.equal(classifyKtlsError(g, 'probe').kind, 'unsupported', `getsockopt(SOL_TLS) on a plain TCP socket: ${(g as { code?: string }).code}`);
  }
});

t.test('recvPlain / recvRecord / sendRecord on a plain TCP socket', async (t) => {
  const n = native();
  const { a, b, afd } = await pair(t);
  const buf = Buffer.alloc(64);
  t.equal(n.recvPlain(afd, buf), null, 'EAGAIN is null');
  t.equal(n.recvRecord(afd, buf), null, 'EAGAIN is null');
  b.write('ping');
  await new Promise<void>((resolve) => {
    const p = n.createPoller(afd, (err) => {
      t.equal(err, null, 'poller reports readable without error');
      p.close();
      p.close(); // idempotent
      resolve();
    });
    p.start();
  });
  t.same(n.recvRecord(afd, buf), { type: 0, bytes: 4, eof: false }, 'no TLS cmsg on a plain socket: type 0');
  t.equal(buf.subarray(0, 4).toString(), 'ping');
  const got = new Promise<string>((resolve) => b.once('data', (d: Buffer) => resolve(d.toString())));
  t.equal(n.sendRecord(afd, 23, Buffer.from('pong')), 4);
  t.equal(await got, 'pong', 'the peer got the bytes');
  b.end();
  await new Promise<void>((resolve) => {
    const p = n.createPoller(afd, () => {
      p.close();
      resolve();
    });
    p.start();
  });
  t.same(n.recvPlain(afd, buf), { bytes: 0, eof: true }, 'FIN is eof');
  a.destroy();
});

t.test('an exception in the poller callback reaches uncaughtException, not a crash', async (t) => {
  const n = native();
  const { b, afd } = await pair(t);
  const seen = new Promise<unknown>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (err) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(err);
    });
  });
  const p = n.createPoller(afd, () => {
    p.close();
    throw new Error('boom from onReadable');
  });
  p.start();
  b.write('x');
  t.match(await seen, { message: 'boom from onReadable' });
});
