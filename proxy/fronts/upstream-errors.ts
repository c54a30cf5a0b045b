// Upstream failures of both modes: a socket error (or a framing error of
// proxy/upstream/, named with llhttp's codes) classified into the
// metric's UPSTREAM_ERROR_REASONS (proxy/vocabulary.ts), and, in http mode,
// the short answer each reason gets when no response head is out yet.
import type { UpstreamErrorReason } from '../vocabulary.js';

/** The errno / llhttp codes with a reason of their own; any other code is `other`. */
const REASON_OF_CODE = new Map<string, UpstreamErrorReason>([
  ['ECONNREFUSED', 'connect_refused'],
  ['EHOSTUNREACH', 'connect_refused'],
  ['ENETUNREACH', 'connect_refused'],
  ['EADDRNOTAVAIL', 'connect_refused'],
  ['ENOTFOUND', 'dns'],
  ['EAI_AGAIN', 'dns'],
  ['ECONNRESET', 'reset'],
  ['EPIPE', 'reset'],
  ['HPE_INVALID_CONSTANT', 'protocol'],
  ['HPE_INVALID_VERSION', 'protocol'],
  ['HPE_INVALID_STATUS', 'protocol'],
  ['HPE_INVALID_HEADER_TOKEN', 'protocol'],
  ['HPE_LF_EXPECTED', 'protocol'],
  ['HPE_CR_EXPECTED', 'protocol'],
  ['HPE_HEADER_OVERFLOW', 'protocol'],
  ['HPE_UNEXPECTED_CONTENT_LENGTH', 'protocol'],
  ['HPE_INVALID_CONTENT_LENGTH', 'protocol'],
  ['HPE_INVALID_CHUNK_SIZE', 'protocol'],
  ['HPE_INVALID_TRANSFER_ENCODING', 'protocol'],
]);

/** Map an upstream socket error to the metric's reason set. */
export function upstreamReason(err: NodeJS.ErrnoException): UpstreamErrorReason {
  return REASON_OF_CODE.get(err.code ?? '') ?? 'other';
}

const UNREACHABLE = { status: 502, text: 'upstream is not reachable.' };
const FAILED = { status: 502, text: 'upstream failed.' };
const TOO_SLOW = { status: 504, text: 'upstream did not answer in time.' };

/** The status and text an HTTP client gets for each reason (timeouts 504, our own queue 503, the rest 502). */
export const UPSTREAM_ANSWERS: Readonly<Record<UpstreamErrorReason, { status: number; text: string }>> = {
  connect_refused: UNREACHABLE,
  dns: UNREACHABLE,
  connect_timeout: TOO_SLOW,
  response_timeout: TOO_SLOW,
  overloaded: { status: 503, text: 'too many requests to the upstream, try again.' },
  reset: FAILED,
  protocol: FAILED,
  other: FAILED,
};
