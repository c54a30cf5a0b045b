// The connection's log lines: the close line of each connection that
// `log.connections` selects (refused or opened, proxy/log.ts
// logConnectionClose) and the per-connection warnings of the engine and kTLS
// paths. Never key material: names, counts, reasons.
import { performance } from 'node:perf_hooks';
import { type ConnectionLogPolicy, type LogConnections, parseLogConnections } from '../config/schema.js';
import { type Logger, logConnectionClose } from '../log.js';
import { type CloseReason, NORMAL_CLOSE_REASONS, type RejectReason } from '../vocabulary.js';
import type { ConnectionObserver, ConnectionRefusal } from './events.js';

/**
 * The normal ends (proxy/vocabulary.ts). Every other end — headers_timeout,
 * bad_request, upstream_error, key_update_limit, error, other, and any reason
 * added later — is a failure, and so is any end that carries an error, except
 * a client's reset (its error is the reset).
 */
const NORMAL_CLOSES: ReadonlySet<CloseReason> = new Set<CloseReason>(NORMAL_CLOSE_REASONS);

/**
 * Refusals that are not failures: a client that closed before sending a byte
 * (TCP health checks, load-balancer probes). Every other refusal and every
 * failed handshake is one.
 */
export const NORMAL_REJECT_REASONS: ReadonlySet<RejectReason> = new Set<RejectReason>(['no_data']);

export function refusalIsFailure(refusal: ConnectionRefusal): boolean {
  return refusal.kind !== 'rejected' || !NORMAL_REJECT_REASONS.has(refusal.reason);
}

export function closeIsFailure(reason: CloseReason, error: unknown): boolean {
  return (error !== undefined && reason !== 'client_reset') || !NORMAL_CLOSES.has(reason);
}

/** Whether one connection gets its close line under `policy` (`random` draws the sample). */
export function wantsCloseLine(policy: ConnectionLogPolicy, failure: boolean, random: () => number = Math.random): boolean {
  if (failure) return policy.failures;
  return policy.normal >= 1 || (policy.normal > 0 && random() < policy.normal);
}

/**
 * `setting` is read at each close (a SIGHUP reload changes it for the
 * connections that close after it); its parse is kept until it changes.
 */
export function closeLog(logger: Logger, setting: () => LogConnections): Partial<ConnectionObserver> {
  let seen: LogConnections | undefined;
  let policy: ConnectionLogPolicy = { normal: 0, failures: true };
  const wants = (failure: boolean): boolean => {
    const s = setting();
    if (s !== seen) {
      const parsed = parseLogConnections(s);
      // The config was validated at load; an unparsable value here logs failures only.
      policy = typeof parsed === 'string' ? { normal: 0, failures: true } : parsed;
      seen = s;
    }
    return wantsCloseLine(policy, failure);
  };
  return {
    refused: (conn, refusal, error) => {
      if (!wants(refusalIsFailure(refusal))) return;
      logConnectionClose(logger, {
        id: conn.id,
        remoteAddress: conn.remoteAddress,
        remotePort: conn.remotePort,
        protocol: 'none',
        bytesIn: 0,
        bytesOut: 0,
        durationMs: performance.now() - conn.acceptedAt,
        closeReason: refusal.closeReason ?? (refusal.kind === 'rejected' ? refusal.reason : `handshake_${refusal.reason}`),
        ktls: 'off',
        ktlsReason: 'not_attempted',
        error,
      });
    },
    opened: (conn) => ({
      closed: (end) => {
        if (!wants(closeIsFailure(end.reason, end.error))) return;
        logConnectionClose(logger, {
          id: conn.id,
          remoteAddress: conn.remoteAddress,
          remotePort: conn.remotePort,
          servername: conn.servername,
          protocol: conn.labels.protocol,
          tlsVersion: conn.tlsVersion,
          cipher: conn.cipher,
          alpn: conn.alpn,
          bytesIn: end.bytesIn,
          bytesOut: end.bytesOut,
          durationMs: performance.now() - conn.acceptedAt,
          closeReason: end.reason,
          ktls: conn.labels.ktls,
          ktlsReason: conn.labels.ktls_reason,
          direction: conn.labels.direction,
          error: end.error,
          ktlsInfo: end.closeInfo,
        });
      },
    }),
    engineFallback: (id, fb) => {
      // A suite the operator enabled is expected; the other reasons are engine trouble.
      const level = fb.engineReason === 'cipher_not_offloadable' ? 'info' : 'warn';
      logger[level](
        { conn: id, event: 'engine_fallback', engine_reason: fb.engineReason, ktls_reason: fb.ktlsReason, cipher: fb.cipher },
        'no exact hand-off state: the connection stays on Node\'s TLS over the engine\'s stream',
      );
    },
    jsStreamWriteRefused: (id) =>
      logger.warn({ conn: id, event: 'js_stream_write_refused' }, 'TLS wrote over the engine stream during its shutdown: write failed, connection ends'),
    ktls: (id) => ({
      // Counted by syscallError just before; the line says why this connection stays in JS.
      installFailed: (info) =>
        logger.debug({ conn: id, event: 'ktls_install_failed', errno: info.errno, stage: info.stage }, 'kTLS install failed; continuing in userspace'),
      installAborted: (info) =>
        logger.warn({ conn: id, event: 'ktls_install_aborted', errno: info.errno, stage: info.stage }, 'kTLS RX install failed after TX: connection closed'),
      // At most twice per connection (a second attempt closes it); the close line counts them too.
      renegotiationRefused: (fatal) =>
        logger.info(
          { conn: id, event: 'tls_renegotiation_refused', fatal },
          fatal ? 'client renegotiation asked again: connection closed' : 'client renegotiation refused (no_renegotiation)',
        ),
    }),
  };
}
