// The handshake engine's coded error. A HandshakeError's `reason` is already
// the label it is counted under (proxy/vocabulary.ts; failure.ts classifies
// it); the message never carries key material.

import { ErrorCodes, SidecarError } from '../errors.js';
import type { HandshakeFailureReason, RejectReason } from '../vocabulary.js';

/**
 * How an engine handshake can fail: a handshake failure, or the one
 * rejection the engine itself makes (a client flight over the buffering
 * budget). proxy/handshake/failure.ts turns it into the metric's kind.
 */
export type HandshakeErrorReason = HandshakeFailureReason | Extract<RejectReason, 'handshake_buffer_limit'>;

export class HandshakeError extends SidecarError {
  readonly reason: HandshakeErrorReason;

  /**
   * `notTls`: the first record could not be framed as TLS. It is counted as
   * `protocol_error` (the sniff already saw a TLS record type, see
   * failure.ts) but keeps the NOT_TLS code for whoever runs the engine
   * without the sniff.
   */
  constructor(reason: HandshakeErrorReason, message: string, options?: { cause?: unknown; notTls?: boolean }) {
    const code = reason === 'handshake_buffer_limit' ? ErrorCodes.LIMIT : options?.notTls ? ErrorCodes.NOT_TLS : ErrorCodes.HANDSHAKE;
    super(code, `${reason}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
  }
}
