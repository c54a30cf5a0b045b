// The native splice pump against a real kTLS kernel (kernel lab VM), every cipher × TLS
// version: bytes spliced INTO a kTLS TX socket come out as records that decrypt with
// node:crypto (sha256 over sizes around one record and 4 MiB); records sealed with
// node:crypto come OUT of a kTLS RX socket by splice, and a control record (alert,
// KeyUpdate) in the middle ends the run with splice_in EINVAL (classified control_record)
// after every byte before it arrived; recvRecord then returns the record, a new run moves
// the rest. Errnos asserted here are what the lab kernels (7.x and 6.1) answer.
import t from 'tap';
import type { Test } from 'tap';
import type net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { native } from '../../native/index.js';
import type { KtlsNative } from '../../native/index.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { CONTENT, cryptoInfo, knownKeys, openRecord, sealRecord } from './helpers/records.js';
import type { KnownKeys } from './helpers/records.js';
import { awaitablePump, hashReader, kernelHasRekey, ktlsPair, rawReader, recvRecordWait, skipOutsideLab, tcpPair, tlsCounter } from './helpers/sockets.js';

const VERSIONS: TlsVersion[] = ['TLSv1.2', 'TLSv1.3'];
const CIPHERS: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'];
const TX_SIZES = [0, 1, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 4 * 1024 * 1024];
const KEY_UPDATE = Buffer.from([24, 0, 0, 1, 0]); // RFC 8446 4.6.3, update_not_requested
const MAX_RECORD = 16 * 1024;
const rekey = kernelHasRekey();

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** `data` sealed as application-data records of at most 16 KiB from `seq` on; the next seq. */
function sealStream(k: KnownKeys, seq: bigint, data: Buffer): { wire: Buffer; next: bigint } {
  const parts: Buffer[] = [];
  for (let off = 0; off < data.length; off += MAX_RECORD) {
    parts.push(sealRecord(k, seq++, CONTENT.data, data.subarray(off, off + MAX_RECORD)));
  }
  return { wire: Buffer.concat(parts), next: seq };
}

/** Everything Node reads from a plain socket, as one Buffer. */
function byteReader(sock: net.Socket): { until(n: number): Promise<Buffer> } {
  const parts: Buffer[] = [];
  let n = 0;
  let waiter: { n: number; resolve: (b: Buffer) => void } | null = null;
  sock.on('data', (d: Buffer) => {
    parts.push(d);
    n += d.length;
    if (waiter && n >= waiter.n) {
      const w = waiter;
      waiter = null;
      w.resolve(Buffer.concat(parts));
    }
  });
  sock.resume();
  return {
    until: (want) =>
      new Promise((resolve) => {
        if (n >= want) resolve(Buffer.concat(parts));
        else waiter = { n: want, resolve };
      }),
  };
}

/** Opens records from `reader` until `size` plaintext bytes; returns its sha256 and the next seq. */
async function openStream(t: Test, k: KnownKeys, reader: { next(): Promise<Buffer> }, size: number): Promise<{ digest: string; seq: bigint }> {
  const h = createHash('sha256');
  let got = 0;
  let seq = k.recSeq;
  let bad = 0;
  while (got < size) {
    const o = openRecord(k, seq, await reader.next());
    if (!o || o.type !== CONTENT.data || o.plaintext.length > MAX_RECORD || o.plaintext.length === 0) {
      bad++;
      break;
    }
    h.update(o.plaintext);
    got += o.plaintext.length;
    seq++;
  }
  t.equal(bad, 0, 'every record authenticates with the known key, type 23, 1..16384 B');
  t.equal(got, size, 'plaintext length');
  return { digest: h.digest('hex'), seq };
}

for (const version of VERSIONS) {
  for (const cipher of CIPHERS) {
    const name = `${version} ${cipher}`;

    t.test(`${name}: splice INTO kTLS TX, records decrypt with node:crypto`, { skip: skipOutsideLab }, async (t) => {
      const n = native();
      for (const size of TX_SIZES) {
        const k = knownKeys(version, cipher);
        const src = await tcpPair();
        t.teardown(() => src.close());
        const dst = await ktlsPair(t, { tx: k });
        const reader = rawReader(dst.server);
        const data = randomBytes(size);
        const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
        const fin = done();
        pump.start(0);
        src.client.end(data);
        const r = await fin;
        t.same({ bytes: r.bytes, end: r.end, error: r.error }, { bytes: size, end: 'eof', error: null }, `${size} B spliced`);
        const { digest, seq } = await openStream(t, k, reader, size);
        t.equal(digest, sha(data), `${size} B: sha256`);
        t.equal(n.getCryptoInfo(dst.cfd, 'tx').recSeq, seq, 'the kernel sealed exactly the records seen');
        pump.close();
      }
    });

    t.test(`${name}: splice OUT OF kTLS RX stops at an alert; recvRecord takes it; a new run moves the rest`, { skip: skipOutsideLab }, async (t) => {
      const n = native();
      const k = knownKeys(version, cipher);
      const src = await ktlsPair(t, { rx: k });
      const dst = await tcpPair();
      t.teardown(() => dst.close());
      const got = byteReader(dst.server);
      const before = randomBytes(40_000);
      const after = randomBytes(30_001);
      const s1 = sealStream(k, k.recSeq, before);
      const alert = sealRecord(k, s1.next, CONTENT.alert, Buffer.from([1, 0]));
      const s2 = sealStream(k, s1.next + 1n, after);
      src.client.write(Buffer.concat([s1.wire, alert, s2.wire]));
      const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
      let fin = done();
      pump.start(0);
      const r = await fin;
      t.equal(r.end, 'error');
      t.equal(r.bytes, before.length, 'every byte before the alert was moved');
      t.match(r.error, { syscall: 'splice_in', code: 'EINVAL' }, 'kTLS RX refuses to splice a control record: EINVAL');
      t.equal(classifyKtlsError(r.error, 'splice_in').kind, 'control_record');
      t.equal(sha(await got.until(before.length)), sha(before), 'they reached `to` first, in order');
      const buf = Buffer.alloc(MAX_RECORD);
      const rec = await recvRecordWait(n, src.sfd, buf);
      t.same({ type: rec.type, d: Buffer.from(buf.subarray(0, rec.bytes)) }, { type: CONTENT.alert, d: Buffer.from([1, 0]) }, 'the alert is still there for recvmsg');
      fin = done();
      pump.start(0);
      src.client.end();
      const r2 = await fin;
      t.same({ bytes: r2.bytes, end: r2.end, error: r2.error }, { bytes: after.length, end: 'eof', error: null }, 'the rest, then EOF');
      t.equal(sha(await got.until(before.length + after.length)), sha(Buffer.concat([before, after])), 'sha256 of the whole stream');
    });
  }
}

t.test('TLSv1.3 splice OUT OF kTLS RX across a KeyUpdate: EINVAL, the record, EKEYEXPIRED, new key, the rest', { skip: skipOutsideLab || (rekey ? false : 'kernel < 6.14 has no rekey') }, async (t) => {
  const n = native();
  for (const cipher of CIPHERS) {
    const k1 = knownKeys('TLSv1.3', cipher);
    const k2 = knownKeys('TLSv1.3', cipher, 1);
    const src = await ktlsPair(t, { rx: k1 });
    const dst = await tcpPair();
    t.teardown(() => dst.close());
    const got = byteReader(dst.server);
    const before = randomBytes(50_000);
    const after = randomBytes(20_000);
    const s1 = sealStream(k1, k1.recSeq, before);
    const ku = sealRecord(k1, s1.next, CONTENT.handshake, KEY_UPDATE);
    const s2 = sealStream(k2, 0n, after);
    src.client.write(Buffer.concat([s1.wire, ku, s2.wire]));
    const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
    let fin = done();
    pump.start(0);
    let r = await fin;
    t.match({ end: r.end, bytes: r.bytes, error: r.error }, { end: 'error', bytes: before.length, error: { syscall: 'splice_in', code: 'EINVAL' } }, `${cipher}: stopped at the KeyUpdate`);
    t.equal(sha(await got.until(before.length)), sha(before));
    const buf = Buffer.alloc(MAX_RECORD);
    const rec = await recvRecordWait(n, src.sfd, buf);
    t.same({ type: rec.type, d: Buffer.from(buf.subarray(0, rec.bytes)) }, { type: CONTENT.handshake, d: KEY_UPDATE }, 'recvRecord returns the KeyUpdate');
    fin = done();
    pump.start(0);
    r = await fin;
    t.match({ end: r.end, bytes: r.bytes, error: r.error }, { end: 'error', bytes: 0, error: { syscall: 'splice_in', code: 'EKEYEXPIRED' } }, 'RX paused until the next key');
    t.equal(classifyKtlsError(r.error, 'splice_in').kind, 'rekey_pending');
    n.setCryptoInfo(src.sfd, 'rx', cryptoInfo(k2));
    fin = done();
    pump.start(0);
    src.client.end();
    r = await fin;
    t.same({ bytes: r.bytes, end: r.end, error: r.error }, { bytes: after.length, end: 'eof', error: null }, 'under the new key, then EOF');
    t.equal(sha(await got.until(before.length + after.length)), sha(Buffer.concat([before, after])));
  }
});

for (const version of VERSIONS) {
  t.test(`${version}: a tampered record mid-splice ends splice_in EBADMSG after the bytes before it`, { skip: skipOutsideLab }, async (t) => {
    const n = native();
    const k = knownKeys(version, 'AES_GCM_128');
    const src = await ktlsPair(t, { rx: k });
    const dst = await tcpPair();
    t.teardown(() => dst.close());
    const got = byteReader(dst.server);
    const before = randomBytes(33_000);
    const s1 = sealStream(k, k.recSeq, before);
    const bad = sealRecord(k, s1.next, CONTENT.data, Buffer.from('tampered'));
    bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 0x01;
    const decryptErrors = tlsCounter('TlsDecryptError');
    src.client.write(Buffer.concat([s1.wire, bad]));
    const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
    const fin = done();
    pump.start(0);
    const r = await fin;
    t.match({ end: r.end, bytes: r.bytes, error: r.error }, { end: 'error', bytes: before.length, error: { syscall: 'splice_in', code: 'EBADMSG' } });
    t.equal(classifyKtlsError(r.error, 'splice_in').kind, 'decrypt_error');
    t.equal(sha(await got.until(before.length)), sha(before), 'the authentic bytes before it arrived');
    t.ok(tlsCounter('TlsDecryptError') > decryptErrors, 'tls_stat: TlsDecryptError moved');
  });

  t.test(`${version}: a budget inside a record leaves the rest of that record for recvRecord`, { skip: skipOutsideLab }, async (t) => {
    const n = native();
    const k = knownKeys(version, 'AES_GCM_256');
    const src = await ktlsPair(t, { rx: k });
    const dst = await tcpPair();
    t.teardown(() => dst.close());
    const got = byteReader(dst.server);
    const data = randomBytes(MAX_RECORD);
    src.client.write(sealRecord(k, k.recSeq, CONTENT.data, data));
    const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
    const fin = done();
    pump.start(10_000);
    t.match(await fin, { bytes: 10_000, end: 'budget', error: null });
    t.equal(sha(await got.until(10_000)), sha(data.subarray(0, 10_000)));
    const buf = Buffer.alloc(MAX_RECORD);
    const rec = await recvRecordWait(n, src.sfd, buf);
    t.same({ type: rec.type, d: Buffer.from(buf.subarray(0, rec.bytes)) }, { type: CONTENT.data, d: data.subarray(10_000) }, 'the record\'s other 6 384 B');
  });

  t.test(`${version}: kTLS RX -> splice -> kTLS TX (tcp mode with both directions in the kernel)`, { skip: skipOutsideLab }, async (t) => {
    const n: KtlsNative = native();
    const kin = knownKeys(version, 'CHACHA20_POLY1305');
    const kout = knownKeys(version, 'AES_GCM_128', 1);
    const src = await ktlsPair(t, { rx: kin });
    const dst = await ktlsPair(t, { tx: kout });
    const reader = rawReader(dst.server);
    const data = randomBytes(1024 * 1024 + 11);
    const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
    const fin = done();
    pump.start(0);
    src.client.end(sealStream(kin, kin.recSeq, data).wire);
    t.match(await fin, { bytes: data.length, end: 'eof', error: null });
    const { digest } = await openStream(t, kout, reader, data.length);
    t.equal(digest, sha(data), 'decrypted by the kernel, re-encrypted by the kernel, exact');
  });
}

t.test('a reset of the kTLS TX peer mid-splice ends splice_out, classified closed', { skip: skipOutsideLab }, async (t) => {
  const n = native();
  const src = await tcpPair();
  t.teardown(() => src.close());
  const dst = await ktlsPair(t, { tx: knownKeys('TLSv1.3', 'AES_GCM_128') });
  const sink = hashReader(dst.server);
  const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
  const fin = done();
  pump.start(0);
  src.client.write(randomBytes(1024 * 1024));
  await sink.until(1);
  dst.server.resetAndDestroy();
  src.client.write(randomBytes(8 * 1024 * 1024));
  const r = await fin;
  t.equal(r.end, 'error');
  t.equal(r.error?.syscall, 'splice_out');
  t.ok(['ECONNRESET', 'EPIPE'].includes(r.error?.code ?? ''), `errno ${r.error?.code}`);
  t.equal(classifyKtlsError(r.error, 'splice_out').kind, 'closed');
});

t.test('half a record in kTLS RX: the pump waits for the rest without spinning', { skip: skipOutsideLab }, async (t) => {
  const n = native();
  const k = knownKeys('TLSv1.3', 'AES_GCM_128');
  const src = await ktlsPair(t, { rx: k });
  const dst = await tcpPair();
  t.teardown(() => dst.close());
  const got = byteReader(dst.server);
  const data = randomBytes(MAX_RECORD);
  const rec = sealRecord(k, k.recSeq, CONTENT.data, data);
  const { pump, done } = awaitablePump(t, n, src.sfd, dst.cfd);
  const fin = done();
  pump.start(MAX_RECORD);
  src.client.write(rec.subarray(0, 8000));
  await new Promise((resolve) => setTimeout(resolve, 200));
  // The TCP queue holds bytes, the record is incomplete: splice answers EAGAIN. If epoll kept
  // reporting EPOLLIN for those bytes, the pump would spin through this whole second.
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const used = process.cpuUsage(before);
  const ms = (used.user + used.system) / 1000;
  t.equal(pump.moved(), 0, 'nothing moved from an incomplete record');
  t.ok(ms < 300, `process CPU over 1 s with half a record queued: ${ms.toFixed(1)} ms`);
  src.client.write(rec.subarray(8000));
  t.match(await fin, { bytes: MAX_RECORD, end: 'budget', error: null });
  t.equal(sha(await got.until(MAX_RECORD)), sha(data));
});

t.test('half a record in kTLS RX: a poller whose callback read until EAGAIN (returns true) waits for the whole record', { skip: skipOutsideLab }, async (t) => {
  const n = native();
  const k = knownKeys('TLSv1.2', 'AES_GCM_128');
  const src = await ktlsPair(t, { rx: k });
  const data = randomBytes(12_000);
  const rec = sealRecord(k, k.recSeq, CONTENT.data, data);
  const buf = Buffer.alloc(MAX_RECORD);
  src.client.write(rec.subarray(0, 5000));
  await new Promise((resolve) => setTimeout(resolve, 200));
  // Level-triggered (the callback returns nothing): how often the kernel's readiness calls it.
  let levelCalls = 0;
  const level = n.createPoller(src.sfd, () => {
    levelCalls++;
    t.equal(n.recvRecord(src.sfd, buf), null, 'EAGAIN: the record is incomplete');
  });
  level.start();
  await new Promise((resolve) => setTimeout(resolve, 300));
  level.close();
  t.comment(`level-triggered: ${levelCalls} calls in 300 ms with half a record queued`);
  let calls = 0;
  let whole: Buffer | null = null;
  const done = new Promise<void>((resolve) => {
    const p = n.createPoller(src.sfd, () => {
      calls++;
      const r = n.recvRecord(src.sfd, buf);
      if (r === null) return true; // read until EAGAIN: wait for the next edge
      whole = Buffer.from(buf.subarray(0, r.bytes));
      p.close();
      resolve();
      return false;
    });
    t.teardown(() => p.close());
    p.start();
  });
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const used = process.cpuUsage(before);
  t.ok(calls <= 2, `edge-triggered after EAGAIN: ${calls} call(s) in 1 s`);
  t.ok((used.user + used.system) / 1000 < 300, `process CPU ${((used.user + used.system) / 1000).toFixed(1)} ms`);
  src.client.write(rec.subarray(5000));
  await done;
  t.same(whole, data, 'the record, once whole, wakes it and reads');
});
