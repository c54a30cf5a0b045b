// The one classifier every kTLS syscall failure goes through, so the record layer,
// the probe and the metrics agree on what an errno means (Documentation/networking/tls.rst).

import type { KtlsStage } from '../vocabulary.js';

/** What an errno means for a kTLS socket. */
export type KtlsErrorKind =
  /** EIO from a plain read, EINVAL from a splice out of kTLS RX: the next record is not application data
   *  (alert, handshake). Use recvmsg + cmsg (the record is still queued), then read on. */
  | 'control_record'
  /** EBADMSG: a record failed authentication (tampered, wrong key or sequence). The connection is dead. */
  | 'decrypt_error'
  /** EKEYEXPIRED: a TLS 1.3 KeyUpdate was received; RX is paused until the next key is installed. */
  | 'rekey_pending'
  /** EMSGSIZE: the record is larger than TLS allows (or a control record that does not fit). */
  | 'record_too_big'
  /** ENOENT / ENOPROTOOPT / EOPNOTSUPP: the kernel lacks the ULP, the cipher or the option. */
  | 'unsupported'
  /** EBUSY: a key is already set (rekey unsupported on this kernel, or a second install). */
  | 'busy'
  /** EPIPE / ECONNRESET / ENOTCONN / ESHUTDOWN: the connection is gone. */
  | 'closed'
  /** EAGAIN: nothing to do right now. */
  | 'would_block'
  | 'other';

export interface KtlsErrorClass {
  /** errno name ('EBADMSG'), or 'UNKNOWN' when `err` carried none. */
  errno: string;
  kind: KtlsErrorKind;
  stage: KtlsStage;
}

/** Reads: EIO here means a non-data record met a read without a cmsg buffer. */
const READ_STAGES: ReadonlySet<string> = new Set(['recv', 'read', 'read_plain', 'splice_in']);
/** Splice out of a socket: kTLS RX answers EINVAL to a non-data record and keeps it queued
 *  (net/tls/tls_sw.c tls_sw_splice_read: "splice does not support reading control messages"). */
const SPLICE_READ_STAGES: ReadonlySet<string> = new Set(['splice_in']);
/** Installs: EINVAL here means the kernel refuses the version/cipher combination. */
const INSTALL_STAGES: ReadonlySet<string> = new Set(['install_tx', 'install_rx', 'option', 'probe']);

const KIND_BY_ERRNO: Readonly<Record<string, KtlsErrorKind>> = {
  EBADMSG: 'decrypt_error',
  EKEYEXPIRED: 'rekey_pending',
  EMSGSIZE: 'record_too_big',
  ENOENT: 'unsupported',
  ENOPROTOOPT: 'unsupported',
  EOPNOTSUPP: 'unsupported',
  ENOTSUP: 'unsupported',
  EBUSY: 'busy',
  EPIPE: 'closed',
  ECONNRESET: 'closed',
  ENOTCONN: 'closed',
  ESHUTDOWN: 'closed',
  EAGAIN: 'would_block',
  EWOULDBLOCK: 'would_block',
};

/** The errno name of a thrown value: NativeSyscallError and Node system errors carry it in `code`. */
function errnoOf(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  }
  return 'UNKNOWN';
}

/**
 * Classifies a kTLS syscall failure. EIO only means "control record" on a read
 * (a read without a cmsg buffer meeting a non-data record once RX is in the
 * kernel); elsewhere it is 'other'. EINVAL (bad crypto info, unsupported
 * combination) is 'unsupported' at install/option time, "control record" on a
 * splice out of a kTLS RX socket (splice_in), and 'other' elsewhere.
 */
export function classifyKtlsError(err: unknown, stage: KtlsStage): KtlsErrorClass {
  const errno = errnoOf(err);
  let kind: KtlsErrorKind = KIND_BY_ERRNO[errno] ?? 'other';
  if (errno === 'EIO' && READ_STAGES.has(stage)) kind = 'control_record';
  if (errno === 'EINVAL' && INSTALL_STAGES.has(stage)) kind = 'unsupported';
  if (errno === 'EINVAL' && SPLICE_READ_STAGES.has(stage)) kind = 'control_record';
  return { errno, kind, stage };
}
