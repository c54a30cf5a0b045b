// The handshake engine's coded failure. `reason` is a closed set so the
// caller can count failures by it (metric label); the message never carries
// key material.

import { ErrorCodes, SidecarError } from '../errors.js';

export const HANDSHAKE_FAILURE_REASONS = [
  'timeout',
  'not_tls',
  'protocol_error',
  'no_shared_cipher',
  'unsupported_version',
  'client_cert_rejected',
  'peer_closed',
  'peer_alert',
  'buffer_limit',
  'internal_error',
] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];

export class HandshakeError extends SidecarError {
  readonly reason: HandshakeFailureReason;

  constructor(reason: HandshakeFailureReason, message: string, options?: { cause?: unknown }) {
    const code = reason === 'not_tls' ? ErrorCodes.NOT_TLS : reason === 'buffer_limit' ? ErrorCodes.LIMIT : ErrorCodes.HANDSHAKE;
    super(code, `${reason}: ${message}`, options);
    this.reason = reason;
  }
}

/** A malformed or inconsistent record stream seen by the framer, hello parser or tracker. */
export class TlsWireError extends Error {
  constructor(message: string, readonly notTls = false) {
    super(message);
    this.name = 'TlsWireError';
  }
}

/**
 * Map an OpenSSL error reported by Node (`tlsClientError`) to a reason label.
 * Node puts OpenSSL's reason into `err.code` as `ERR_SSL_<REASON>`.
 */
export function reasonFromTlsError(err: unknown): HandshakeFailureReason {
  const code = typeof (err as { code?: unknown } | null)?.code === 'string' ? (err as { code: string }).code : '';
  const message = err instanceof Error ? err.message : '';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'peer_closed';
  if (/NO_SHARED_CIPHER|NO_SUITABLE_|NO_CIPHERS/.test(code)) return 'no_shared_cipher';
  if (/UNSUPPORTED_PROTOCOL|WRONG_VERSION_NUMBER|VERSION_TOO_LOW|VERSION_TOO_HIGH|INAPPROPRIATE_FALLBACK/.test(code)) {
    return 'unsupported_version';
  }
  if (/HTTP_REQUEST|HTTPS_PROXY_REQUEST/.test(code)) return 'not_tls';
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_VERIFY_FAILED|CERTIFICATE_REQUIRED/.test(code)) return 'client_cert_rejected';
  if (/timed? ?out/i.test(message)) return 'timeout';
  return 'protocol_error';
}
