// TLS 1.3 KeyUpdate through the shim (kernel lab VM). Linux >= 6.14: a second
// TLS_TX key is taken; after a KeyUpdate record kTLS RX answers EKEYEXPIRED until the
// next RX key is set, and TlsTxRekeyOk / TlsRxRekeyOk move. Older kernels (6.1) refuse
// the second key with EBUSY, and the probe reports rekey unsupported.
import t from 'tap';
import { native } from '../../native/index.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import type { KernelCipher } from '../../native/crypto-info.js';
import { CONTENT, cryptoInfo, knownKeys, openRecord } from './helpers/records.js';
import { catchErr, kernelHasRekey, ktlsPair, rawReader, recvRecordWait, skipOutsideLab, tlsCounter } from './helpers/sockets.js';

const KEY_UPDATE = Buffer.from([24, 0, 0, 1, 0]); // RFC 8446 4.6.3, update_not_requested
const rekey = kernelHasRekey();
const CIPHERS: KernelCipher[] = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'];

for (const cipher of CIPHERS) {
  t.test(`TLSv1.3 ${cipher}: KeyUpdate, EKEYEXPIRED, new RX key, data again`, { skip: skipOutsideLab || (rekey ? false : 'kernel < 6.14 has no rekey') }, async (t) => {
    const n = native();
    const k1 = knownKeys('TLSv1.3', cipher);
    const k2 = knownKeys('TLSv1.3', cipher, 1);
    const p = await ktlsPair(t, { tx: k1, rx: k1 });
    const tx0 = tlsCounter('TlsTxRekeyOk');
    const rx0 = tlsCounter('TlsRxRekeyOk');
    const recv0 = tlsCounter('TlsRxRekeyReceived');

    t.equal(n.sendRecord(p.cfd, CONTENT.data, Buffer.from('before rekey')), 12);
    t.equal(n.sendRecord(p.cfd, CONTENT.handshake, KEY_UPDATE), 5);
    n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(k2));
    t.equal(n.getCryptoInfo(p.cfd, 'tx').recSeq, 0n, 'TX sequence restarts at 0 with the new key');
    t.equal(n.sendRecord(p.cfd, CONTENT.data, Buffer.from('after rekey')), 11);

    const buf = Buffer.alloc(256);
    let r = await recvRecordWait(n, p.sfd, buf);
    t.same({ type: r.type, s: buf.subarray(0, r.bytes).toString() }, { type: CONTENT.data, s: 'before rekey' });
    r = await recvRecordWait(n, p.sfd, buf);
    t.same({ type: r.type, d: Buffer.from(buf.subarray(0, r.bytes)) }, { type: CONTENT.handshake, d: KEY_UPDATE }, 'the KeyUpdate arrives as a handshake record');
    const err = catchErr(() => n.recvRecord(p.sfd, buf));
    t.match(err, { code: 'EKEYEXPIRED', syscall: 'recvmsg' }, 'RX paused until the next key');
    t.equal(classifyKtlsError(err, 'recv').kind, 'rekey_pending');
    t.match(catchErr(() => n.recvRecord(p.sfd, buf)), { code: 'EKEYEXPIRED' }, 'still paused on a second read');
    n.setCryptoInfo(p.sfd, 'rx', cryptoInfo(k2));
    r = await recvRecordWait(n, p.sfd, buf);
    t.same({ type: r.type, s: buf.subarray(0, r.bytes).toString() }, { type: CONTENT.data, s: 'after rekey' }, 'data under the new key');
    // >, not +1: the counters are per network namespace, shared with test files running in parallel.
    t.ok(tlsCounter('TlsTxRekeyOk') > tx0, 'TlsTxRekeyOk moved');
    t.ok(tlsCounter('TlsRxRekeyOk') > rx0, 'TlsRxRekeyOk moved');
    t.ok(tlsCounter('TlsRxRekeyReceived') > recv0, 'TlsRxRekeyReceived moved');
  });
}

t.test('TLSv1.3 rekey on the wire: the record after a new TX key decrypts with that key', { skip: skipOutsideLab || (rekey ? false : 'kernel < 6.14 has no rekey') }, async (t) => {
  const n = native();
  const k1 = knownKeys('TLSv1.3', 'AES_GCM_128');
  const k2 = knownKeys('TLSv1.3', 'AES_GCM_128', 1);
  const p = await ktlsPair(t, { tx: k1 });
  const reader = rawReader(p.server);
  n.sendRecord(p.cfd, CONTENT.handshake, KEY_UPDATE);
  n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(k2));
  n.sendRecord(p.cfd, CONTENT.data, Buffer.from('after rekey'));
  const ku = openRecord(k1, k1.recSeq, await reader.next());
  t.same(ku && { type: ku.type, d: ku.plaintext }, { type: CONTENT.handshake, d: KEY_UPDATE }, 'KeyUpdate under key 1');
  const after = openRecord(k2, 0n, await reader.next());
  t.same(after && { type: after.type, s: after.plaintext.toString() }, { type: CONTENT.data, s: 'after rekey' }, 'data under key 2, sequence 0');
});

t.test('before 6.14 a second TLS 1.3 key is refused with EBUSY, and the probe says so', { skip: skipOutsideLab || (rekey ? 'kernel >= 6.14 has rekey' : false) }, async (t) => {
  const n = native();
  const p = await ktlsPair(t, { tx: knownKeys('TLSv1.3', 'AES_GCM_128'), rx: knownKeys('TLSv1.3', 'AES_GCM_128') });
  const txErr = catchErr(() => n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(knownKeys('TLSv1.3', 'AES_GCM_128', 1))));
  t.match(txErr, { code: 'EBUSY', syscall: 'setsockopt(TLS_TX)' });
  t.equal(classifyKtlsError(txErr, 'rekey_tx').kind, 'busy');
  const rxErr = catchErr(() => n.setCryptoInfo(p.sfd, 'rx', cryptoInfo(knownKeys('TLSv1.3', 'AES_GCM_128', 1))));
  t.match(rxErr, { code: 'EBUSY', syscall: 'setsockopt(TLS_RX)' });
  const probe = await probeKernel({ skipNicOffload: true });
  t.equal(probe.rekey, false, 'probe: rekey unsupported');
  t.equal(probe.details.rekey.errno, 'EBUSY');
  t.match(probe.details.rekey.reason, /6\.14/, 'the reason names the kernel version that has it');
});

t.test('TLS 1.2 RX: a handshake record shaped like a KeyUpdate pauses RX from 6.14 on, passes before', { skip: skipOutsideLab }, async (t) => {
  // Found in the lab: 7.x applies the TLS 1.3 KeyUpdate check to TLS 1.2 sockets too.
  // TLS 1.2 has no KeyUpdate, so the record layer must treat such a record as fatal.
  const n = native();
  const k = knownKeys('TLSv1.2', 'AES_GCM_128');
  const p = await ktlsPair(t, { tx: k, rx: k });
  n.sendRecord(p.cfd, CONTENT.handshake, KEY_UPDATE);
  n.sendRecord(p.cfd, CONTENT.data, Buffer.from('next'));
  const buf = Buffer.alloc(64);
  const r = await recvRecordWait(n, p.sfd, buf);
  t.same({ type: r.type, d: Buffer.from(buf.subarray(0, r.bytes)) }, { type: CONTENT.handshake, d: KEY_UPDATE });
  if (rekey) {
    t.match(catchErr(() => n.recvRecord(p.sfd, buf)), { code: 'EKEYEXPIRED' }, '>= 6.14: RX paused');
  } else {
    const r2 = await recvRecordWait(n, p.sfd, buf);
    t.equal(buf.subarray(0, r2.bytes).toString(), 'next', '< 6.14: data flows on');
  }
});
