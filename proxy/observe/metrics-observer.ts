// The connection's life mapped onto the metrics port (docs/metrics.md): the
// only place that turns connection events into counters, so accepted =
// rejected + handshake failures + opened holds by construction.
import { performance } from 'node:perf_hooks';
import type { ConnectionObserver, SidecarEvents } from './events.js';

export function metricsObserver(metrics: SidecarEvents): Partial<ConnectionObserver> {
  return {
    accepted: () => metrics.connectionAccepted(),
    refused: (_conn, refusal) => {
      if (refusal.kind === 'rejected') metrics.connectionRejected(refusal.reason);
      else metrics.handshakeFailed(refusal.reason);
    },
    opened: (conn) => {
      metrics.handshakeCompleted({
        tlsVersion: conn.tlsVersion,
        cipher: conn.cipher,
        protocol: conn.labels.protocol,
        durationSeconds: (performance.now() - conn.acceptedAt) / 1000,
      });
      const cm = metrics.connectionOpened(conn.labels, conn.bytes);
      return { closed: (end) => cm.close(end.reason) };
    },
    engineFallback: () => metrics.internalError('engine_fallback'),
    jsStreamWriteRefused: () => metrics.internalError('js_stream_write_refused'),
    // docs/ktls.md §7.
    ktls: () => ({
      syscallError: (info) => {
        // EAGAIN is the normal "nothing to read yet", not an error.
        if (info.kind !== 'would_block') metrics.ktlsError(info.errno, info.stage);
      },
      // Kernel EBADMSG already came through syscallError; a JS decrypt failure is counted here.
      decryptError: (where) => {
        if (where === 'userspace') metrics.ktlsError('EBADMSG', 'decrypt');
      },
      keyUpdate: (direction, result) => metrics.keyUpdate(direction, result),
      offload: (result, direction, kind) => metrics.ktlsOffload(result, direction, kind),
    }),
  };
}
