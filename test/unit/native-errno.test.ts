// classifyKtlsError: the one mapping from a kTLS syscall failure to what it means.
import t from 'tap';
import { NativeSyscallError } from '../../native/index.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';

const err = (errno: number, syscall = 'recvmsg'): NativeSyscallError => new NativeSyscallError(errno, syscall);

t.test('errno -> kind, independent of the stage', (t) => {
  const cases: Array<[number, string, string]> = [
    [74, 'EBADMSG', 'decrypt_error'],
    [127, 'EKEYEXPIRED', 'rekey_pending'],
    [90, 'EMSGSIZE', 'record_too_big'],
    [2, 'ENOENT', 'unsupported'],
    [92, 'ENOPROTOOPT', 'unsupported'],
    [95, 'EOPNOTSUPP', 'unsupported'],
    [16, 'EBUSY', 'busy'],
    [32, 'EPIPE', 'closed'],
    [104, 'ECONNRESET', 'closed'],
    [107, 'ENOTCONN', 'closed'],
    [11, 'EAGAIN', 'would_block'],
    [9, 'EBADF', 'other'],
  ];
  for (const [n, name, kind] of cases) t.same(classifyKtlsError(err(n), 'write'), { errno: name, kind, stage: 'write' }, name);
  t.end();
});

t.test('EIO is a control record only on a read', (t) => {
  t.equal(classifyKtlsError(err(5), 'read_plain').kind, 'control_record');
  t.equal(classifyKtlsError(err(5), 'recv').kind, 'control_record');
  t.equal(classifyKtlsError(err(5), 'read').kind, 'control_record');
  t.equal(classifyKtlsError(err(5, 'sendmsg'), 'write').kind, 'other');
  t.equal(classifyKtlsError(err(5, 'setsockopt(TLS_TX)'), 'install_tx').kind, 'other');
  t.end();
});

t.test('EINVAL is "unsupported" at install time, "other" elsewhere', (t) => {
  for (const stage of ['install_tx', 'install_rx', 'option', 'probe'] as const) {
    t.equal(classifyKtlsError(err(22), stage).kind, 'unsupported', stage);
  }
  t.equal(classifyKtlsError(err(22), 'rekey_tx').kind, 'other');
  t.equal(classifyKtlsError(err(22), 'recv').kind, 'other');
  t.end();
});

t.test('Node system errors classify by their code too; anything else is UNKNOWN/other', (t) => {
  const sys = Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' });
  t.same(classifyKtlsError(sys, 'write'), { errno: 'EPIPE', kind: 'closed', stage: 'write' });
  t.same(classifyKtlsError(new Error('x'), 'recv'), { errno: 'UNKNOWN', kind: 'other', stage: 'recv' });
  t.same(classifyKtlsError({ code: 'ERR_KTLS_SIDECAR_NATIVE_UNAVAILABLE' }, 'ulp'), { errno: 'UNKNOWN', kind: 'other', stage: 'ulp' });
  t.same(classifyKtlsError(null, 'ulp'), { errno: 'UNKNOWN', kind: 'other', stage: 'ulp' });
  t.end();
});

t.test('splice stages: a control record stops a splice out of kTLS RX; the rest by the errno table', (t) => {
  // Lab-verified (7.x, 6.1): kTLS RX answers EINVAL to a splice that meets a non-data record and
  // keeps it queued for recvmsg (test/kernel/shim-splice.test.ts).
  t.same(classifyKtlsError(err(22, 'splice_in'), 'splice_in'), { errno: 'EINVAL', kind: 'control_record', stage: 'splice_in' });
  t.equal(classifyKtlsError(err(5, 'splice_in'), 'splice_in').kind, 'control_record', 'EIO, as a plain read would say');
  t.equal(classifyKtlsError(err(127, 'splice_in'), 'splice_in').kind, 'rekey_pending', 'EKEYEXPIRED after a KeyUpdate');
  t.equal(classifyKtlsError(err(74, 'splice_in'), 'splice_in').kind, 'decrypt_error');
  t.equal(classifyKtlsError(err(104, 'splice_in'), 'splice_in').kind, 'closed');
  // Writing into `to`: EINVAL is no control record there.
  t.equal(classifyKtlsError(err(22, 'splice_out'), 'splice_out').kind, 'other');
  t.equal(classifyKtlsError(err(5, 'splice_out'), 'splice_out').kind, 'other');
  t.equal(classifyKtlsError(err(32, 'splice_out'), 'splice_out').kind, 'closed');
  t.equal(classifyKtlsError(err(104, 'splice_out'), 'splice_out').kind, 'closed');
  t.equal(classifyKtlsError(err(11, 'splice_out'), 'splice_out').kind, 'would_block');
  t.end();
});
