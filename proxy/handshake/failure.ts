// The engine's coded error and the one handshake-failure classifier, for
// both handshake paths: what Node's TLS server reports in 'tlsClientError'
// (the TLSSocket fast path, and the engine's own tls.Server) and the
// engine's HandshakeError. Every result is a label of proxy/vocabulary.ts: a
// handshake that started and failed, or a connection rejected before one
// (the engine's buffering budget). Messages never carry key material.

import { ErrorCodes, SidecarError } from '../errors.js';
import type { HandshakeFailureReason, RejectReason } from '../vocabulary.js';

/**
 * How an engine handshake can fail: a handshake failure, or the one
 * rejection the engine itself makes (a client flight over the buffering
 * budget). classifyHandshakeFailure() turns it into the metric's kind.
 */
export type HandshakeErrorReason = HandshakeFailureReason | Extract<RejectReason, 'handshake_buffer_limit'>;

export class HandshakeError extends SidecarError {
  readonly reason: HandshakeErrorReason;

  /**
   * `notTls`: the first record could not be framed as TLS. It is counted as
   * `protocol_error` (the sniff already saw a TLS record type, see
   * classifyHandshakeFailure) but keeps the NOT_TLS code for whoever runs
   * the engine without the sniff.
   */
  constructor(reason: HandshakeErrorReason, message: string, options?: { cause?: unknown; notTls?: boolean }) {
    const code = reason === 'handshake_buffer_limit' ? ErrorCodes.LIMIT : options?.notTls ? ErrorCodes.NOT_TLS : ErrorCodes.HANDSHAKE;
    super(code, `${reason}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
  }
}

export type HandshakeFailure =
  | { kind: 'handshake_failure'; reason: HandshakeFailureReason }
  | { kind: 'rejected'; reason: RejectReason };

/**
 * The label of a failed handshake. A HandshakeError already carries its
 * label. The engine only sees connections the sniff classified as TLS (a
 * 0x16 handshake record type first), so a first record it cannot frame is a
 * malformed ClientHello (`protocol_error`, code NOT_TLS), as OpenSSL's
 * WRONG_VERSION_NUMBER / PACKET_LENGTH_TOO_LONG are on the TLSSocket path;
 * non-TLS bytes are rejected (`not_tls`, `plain_http`) by the sniff, before
 * any handshake.
 */
export function classifyHandshakeFailure(err: unknown): HandshakeFailure {
  if (err instanceof HandshakeError) {
    return err.reason === 'handshake_buffer_limit'
      ? { kind: 'rejected', reason: err.reason }
      : { kind: 'handshake_failure', reason: err.reason };
  }
  return { kind: 'handshake_failure', reason: tlsErrorReason(err) };
}

/**
 * OpenSSL's reason for a failed server handshake (Node's `ERR_SSL_<REASON>`).
 * Anything not named here is OpenSSL refusing the bytes the client sent
 * (unexpected message, length mismatch, packet length too long, bad
 * extension, …): a malformed handshake, `protocol_error`.
 */
function opensslReason(reason: string): HandshakeFailureReason {
  if (reason === 'PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'client_cert_required';
  if (reason === 'NO_APPLICATION_PROTOCOL') return 'no_application_protocol';
  // A record header whose version is not 3.x (a 0x16 byte followed by garbage),
  // not a version the client asked for: the sniff already saw a TLS record type.
  if (reason === 'WRONG_VERSION_NUMBER') return 'protocol_error';
  if (/UNSUPPORTED_PROTOCOL|VERSION|INAPPROPRIATE_FALLBACK/.test(reason)) return 'protocol_version';
  if (/NO_SHARED_CIPHER|NO_SUITABLE|NO_CIPHERS/.test(reason)) return 'no_shared_cipher';
  if (/ALERT/.test(reason)) return 'peer_alert';
  if (/CERT/.test(reason)) return 'client_cert_invalid';
  if (/INTERNAL_ERROR|MALLOC_FAILURE/.test(reason)) return 'internal_error';
  return 'protocol_error';
}

/**
 * The label of an error Node's TLS server reports ('tlsClientError'). `other`
 * when it names no cause (not from OpenSSL); the engine then looks at what it
 * saw on the wire (connection.ts).
 */
export function tlsErrorReason(err: unknown): HandshakeFailureReason {
  const code = typeof (err as { code?: unknown } | null)?.code === 'string' ? (err as { code: string }).code : '';
  const msg = `${code} ${err instanceof Error ? err.message : ''}`;
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code === 'ECONNRESET' || /socket disconnected|ECONNRESET|EPIPE/.test(msg)) return 'reset';
  // By code, not message: OpenSSL's message names the failing function too
  // (`tls_parse_ctos_supported_versions: bad extension` is not a version failure).
  if (code.startsWith('ERR_SSL_')) return opensslReason(code.slice('ERR_SSL_'.length));
  if (/peer did not return a certificate/i.test(msg)) return 'client_cert_required';
  if (/no application protocol/i.test(msg)) return 'no_application_protocol';
  if (/unsupported protocol|version too low/i.test(msg)) return 'protocol_version';
  if (/no shared cipher/i.test(msg)) return 'no_shared_cipher';
  if (/alert/i.test(msg)) return 'peer_alert';
  if (/certificate/i.test(msg)) return 'client_cert_invalid';
  return 'other';
}

/** What the engine saw on the wire of a handshake that failed. */
export interface WireEvidence {
  /** Node refused the client certificate before the handshake finished. */
  readonly certRejected: boolean;
  /** Description of the first fatal alert the server (OpenSSL) sent, or null. */
  readonly serverAlert: number | null;
  readonly clientAlert: boolean;
  /** The client closed without having sent malformed bytes. */
  readonly peerClosedCleanly: boolean;
}

/**
 * The label of an engine handshake that failed: OpenSSL's error when it
 * names a cause, else what the engine saw on the wire.
 */
export function engineFailureReason(err: unknown, wire: WireEvidence): HandshakeFailureReason {
  const reason = err === undefined ? 'other' : tlsErrorReason(err);
  if (reason !== 'protocol_error' && reason !== 'other') return reason;
  if (wire.certRejected) return 'client_cert_invalid';
  if (wire.serverAlert !== null) return alertFailureReason(wire.serverAlert);
  if (wire.clientAlert) return 'peer_alert';
  return wire.peerClosedCleanly ? 'reset' : 'protocol_error';
}

/** The label of a fatal alert the server (OpenSSL) sent during an engine handshake. */
export function alertFailureReason(description: number): HandshakeFailureReason {
  switch (description) {
    case 40: return 'no_shared_cipher'; // handshake_failure: OpenSSL's answer to no shared cipher/group
    case 70: return 'protocol_version';
    // bad_certificate, unsupported_certificate, certificate_revoked, certificate_expired,
    // certificate_unknown, unknown_ca, certificate_required
    case 42: case 43: case 44: case 45: case 46: case 48: case 116: return 'client_cert_invalid';
    default: return 'protocol_error';
  }
}
