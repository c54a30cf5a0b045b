// The connection's log lines: the one close line per connection (refused or
// opened, proxy/log.ts logConnectionClose) and the per-connection warnings of
// the engine and kTLS paths. Never key material: names, counts, reasons.
import { performance } from 'node:perf_hooks';
import { type Logger, logConnectionClose } from '../log.js';
import type { ConnectionObserver } from './events.js';

export function closeLog(logger: Logger): Partial<ConnectionObserver> {
  return {
    refused: (conn, refusal, error) =>
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
      }),
    opened: (conn) => ({
      closed: (end) =>
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
        }),
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
