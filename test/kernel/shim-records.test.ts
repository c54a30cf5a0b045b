// The native shim against a real kernel (kernel lab VM): for every cipher × TLS version,
// TX and RX installed with known keys on a loopback TCP pair. What the kernel sends must
// decrypt with node:crypto; what node:crypto seals must come out of kTLS RX; control
// records keep their type; tampering gives EBADMSG; a plain read meets a control record
// as EIO (Documentation/networking/tls.rst).
import t from 'tap';
import { native } from '../../native/index.js';
import type { KtlsNative } from '../../native/index.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';
import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';
import { CONTENT, cryptoInfo, knownKeys, openRecord, sealRecord } from './helpers/records.js';
import { catchErr, ktlsPair, rawReader, recvRecordWait, skipOutsideLab, tlsCounter, waitReadable } from './helpers/sockets.js';

const VERSIONS: TlsVersion[] = ['TLSv1.2', 'TLSv1.3'];
const CIPHERS: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'];

function shim(): KtlsNative {
  return native();
}

for (const version of VERSIONS) {
  for (const cipher of CIPHERS) {
    const name = `${version} ${cipher}`;

    t.test(`${name}: kernel TX records decrypt with node:crypto`, { skip: skipOutsideLab }, async (t) => {
      const n = shim();
      const k = knownKeys(version, cipher);
      const p = await ktlsPair(t); // TX installed by hand: the test checks what setCryptoInfo does to its input
      const reader = rawReader(p.server);
      n.attachUlp(p.cfd);
      const info = cryptoInfo(k);
      n.setCryptoInfo(p.cfd, 'tx', info);
      t.ok(info.key.every((b) => b === 0) && info.iv.every((b) => b === 0) && info.salt.every((b) => b === 0), 'key, iv and salt were zeroed');
      const got = n.getCryptoInfo(p.cfd, 'tx');
      t.same(got, { version, cipher, recSeq: k.recSeq }, 'getsockopt reads back version, cipher, sequence (no key)');

      const msgs = [Buffer.from(`hello over kTLS TX, ${name}`), Buffer.from('second record')];
      for (const m of msgs) t.equal(n.sendRecord(p.cfd, CONTENT.data, m), m.length);
      const alert = Buffer.from([1, 0]);
      t.equal(n.sendRecord(p.cfd, CONTENT.alert, alert), 2, 'a control record goes out too');
      const expected = [...msgs.map((m) => ({ type: CONTENT.data, plaintext: m })), { type: CONTENT.alert, plaintext: alert }];
      let seq = k.recSeq;
      for (const e of expected) {
        const rec = await reader.next();
        if (e.plaintext.length >= 8) t.equal(rec.indexOf(e.plaintext), -1, 'plaintext not visible on the wire');
        const opened = openRecord(k, seq, rec);
        t.ok(opened, `record ${seq - k.recSeq} authenticates with the known key`);
        t.equal(opened?.type, e.type, 'content type');
        t.same(opened?.plaintext, e.plaintext, 'plaintext');
        if (version === 'TLSv1.3') t.equal(rec[0], CONTENT.data, 'TLS 1.3 outer type is application_data');
        seq++;
      }
      t.equal(n.getCryptoInfo(p.cfd, 'tx').recSeq, k.recSeq + 3n, 'the kernel advanced its TX sequence by 3');
    });

    t.test(`${name}: records sealed with node:crypto come out of kernel RX`, { skip: skipOutsideLab }, async (t) => {
      const n = shim();
      const k = knownKeys(version, cipher);
      const p = await ktlsPair(t, { rx: k });
      const data = Buffer.from(`hello over kTLS RX, ${name}`);
      const handshake = Buffer.from([4, 0, 0, 2, 0xab, 0xcd]); // a handshake message (type 4, 2 bytes)
      p.client.write(Buffer.concat([sealRecord(k, k.recSeq, CONTENT.data, data), sealRecord(k, k.recSeq + 1n, CONTENT.handshake, handshake)]));
      const buf = Buffer.alloc(16384);
      const r1 = await recvRecordWait(n, p.sfd, buf);
      t.same({ type: r1.type, data: buf.subarray(0, r1.bytes) }, { type: CONTENT.data, data }, 'data record with type 23');
      const r2 = await recvRecordWait(n, p.sfd, buf);
      t.same({ type: r2.type, data: buf.subarray(0, r2.bytes) }, { type: CONTENT.handshake, data: handshake }, 'control record with type 22');
      t.equal(n.getCryptoInfo(p.sfd, 'rx').recSeq, k.recSeq + 2n, 'the kernel advanced its RX sequence by 2');
      p.client.end();
      const r3 = await recvRecordWait(n, p.sfd, buf);
      t.same(r3, { type: 0, bytes: 0, eof: true }, 'peer FIN reads as eof');
    });

    t.test(`${name}: control records round-trip kTLS TX -> kTLS RX`, { skip: skipOutsideLab }, async (t) => {
      const n = shim();
      const k = knownKeys(version, cipher);
      const p = await ktlsPair(t, { tx: k, rx: k });
      const sent = [
        { type: CONTENT.data, data: Buffer.from('data') },
        { type: CONTENT.alert, data: Buffer.from([1, 0]) },
        // NewSessionTicket-shaped, not KeyUpdate (24): from 6.14 on the kernel pauses RX after
        // any handshake record starting with 24, even on TLS 1.2 (see shim-rekey.test.ts).
        { type: CONTENT.handshake, data: Buffer.from([4, 0, 0, 1, 0]) },
        { type: CONTENT.data, data: Buffer.from('more data') },
      ];
      for (const s of sent) t.equal(n.sendRecord(p.cfd, s.type, s.data), s.data.length);
      const buf = Buffer.alloc(16384);
      for (const s of sent) {
        const r = await recvRecordWait(n, p.sfd, buf);
        t.same({ type: r.type, data: Buffer.from(buf.subarray(0, r.bytes)) }, s, `type ${s.type} arrives as type ${s.type}`);
      }
    });

    t.test(`${name}: a tampered record gives EBADMSG and moves TlsDecryptError`, { skip: skipOutsideLab }, async (t) => {
      const n = shim();
      const k = knownKeys(version, cipher);
      const p = await ktlsPair(t, { rx: k });
      const before = tlsCounter('TlsDecryptError');
      const rec = sealRecord(k, k.recSeq, CONTENT.data, Buffer.from('tampered'));
      rec[rec.length - 1] = (rec[rec.length - 1] ?? 0) ^ 0x01;
      p.client.write(rec);
      await waitReadable(n, p.sfd);
      const err = await recvRecordWait(n, p.sfd, Buffer.alloc(16384)).then(
        () => null,
        (e: unknown) => e,
      );
      t.match(err, { name: 'NativeSyscallError', code: 'EBADMSG', syscall: 'recvmsg' });
      t.equal(classifyKtlsError(err, 'recv').kind, 'decrypt_error');
      // >, not +1: /proc/net/tls_stat is per network namespace, shared with test files running in parallel.
      t.ok(tlsCounter('TlsDecryptError') > before, 'TlsDecryptError moved');
    });

    t.test(`${name}: a plain read meeting a control record gives EIO`, { skip: skipOutsideLab }, async (t) => {
      const n = shim();
      const k = knownKeys(version, cipher);
      const p = await ktlsPair(t, { rx: k });
      p.client.write(sealRecord(k, k.recSeq, CONTENT.alert, Buffer.from([1, 0])));
      await waitReadable(n, p.sfd);
      const buf = Buffer.alloc(16384);
      t.throws(() => n.recvPlain(p.sfd, buf), { code: 'EIO', syscall: 'recv' }, 'recv() without a cmsg buffer');
      let errno = '';
      try {
        n.recvPlain(p.sfd, buf);
      } catch (e) {
        errno = classifyKtlsError(e, 'read_plain').kind;
      }
      t.equal(errno, 'control_record', 'classified as a control record');
      const r = n.recvRecord(p.sfd, buf);
      t.same(r && { type: r.type, data: Buffer.from(buf.subarray(0, r.bytes)) }, { type: CONTENT.alert, data: Buffer.from([1, 0]) }, 'the record is still there for recvmsg');
    });
  }
}

t.test('options: TLS_TX_ZEROCOPY_RO and TLS_RX_EXPECT_NO_PAD set and read back', { skip: skipOutsideLab }, async (t) => {
  const n = shim();
  const k = knownKeys('TLSv1.3', 'AES_GCM_128');
  const p = await ktlsPair(t, { tx: k, rx: k });
  t.equal(n.getOption(p.cfd, 'TLS_TX_ZEROCOPY_RO'), false, 'zerocopy off by default');
  n.setOption(p.cfd, 'TLS_TX_ZEROCOPY_RO', true);
  t.equal(n.getOption(p.cfd, 'TLS_TX_ZEROCOPY_RO'), true, 'zerocopy on');
  n.setOption(p.sfd, 'TLS_RX_EXPECT_NO_PAD', true);
  t.equal(n.getOption(p.sfd, 'TLS_RX_EXPECT_NO_PAD'), true, 'no-pad on');
  // Records still flow with both options on.
  t.equal(n.sendRecord(p.cfd, CONTENT.data, Buffer.from('opt')), 3);
  const buf = Buffer.alloc(64);
  const r = await recvRecordWait(n, p.sfd, buf);
  t.equal(buf.subarray(0, r.bytes).toString(), 'opt');
});

t.test('a second TLS_TX key without rekey support, or a TLS 1.2 one, is refused with a classified errno', { skip: skipOutsideLab }, async (t) => {
  const n = shim();
  const p = await ktlsPair(t, { tx: knownKeys('TLSv1.2', 'AES_GCM_128') });
  // TLS 1.2 has no KeyUpdate: every kernel refuses a second key (EBUSY before 6.14, EINVAL after).
  const err = catchErr(() => n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(knownKeys('TLSv1.2', 'AES_GCM_128', 1))));
  t.match(err, { name: 'NativeSyscallError', syscall: 'setsockopt(TLS_TX)' });
  t.ok(['EBUSY', 'EINVAL'].includes((err as { code: string }).code), `refused with ${(err as { code: string }).code}`);
});
