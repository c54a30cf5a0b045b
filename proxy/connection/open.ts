// Past the handshake: the plaintext connection the front receives, its
// observers (metrics, close line, CPU accounting), drain registration, front.
import type { ConnectionContext, Opened } from './accept.js';
import type { ConnectionOrigin } from './facts.js';
import { PlainConnection, markClose } from './plain-connection.js';

export function openConnection(ctx: ConnectionContext, origin: ConnectionOrigin, { facts, layer, kernel }: Opened): void {
  const { raw } = origin;
  const { front, config } = ctx.gen;
  const protocol = config.mode === 'tcp' ? 'tcp' : facts.alpn === 'h2' ? 'h2' : 'http1';
  facts.ktls = layer.labels.ktls;
  const span = ctx.observer.opened({
    id: origin.id,
    remoteAddress: origin.remoteAddress,
    remotePort: origin.remotePort,
    acceptedAt: origin.acceptedAt,
    servername: facts.servername,
    alpn: facts.alpn,
    tlsVersion: facts.tlsVersion,
    cipher: facts.cipher,
    labels: { ...layer.labels, protocol },
  });
  const conn = new PlainConnection(layer.stream, facts);
  conn.onBytes = span.bytes;
  if (raw.destroyed) conn.destroy();
  else ctx.open.set(raw, conn);
  // Every kTLS connection is tracked, so the flag turning off reaches it.
  if (kernel && !conn.destroyed) ctx.ktlsConns.track(conn, front.drainTarget(conn, protocol));
  let error: unknown;
  conn.on('error', (err) => {
    error = err;
    markClose(conn, 'error');
  });
  conn.once('close', () => {
    span.closed?.({
      reason: conn.closeReason ?? (error ? 'error' : 'client_close'),
      error,
      bytesIn: conn.bytesIn,
      bytesOut: conn.bytesOut,
      closeInfo: layer.closeInfo(),
    });
    // The plaintext stream is gone: make sure the TCP socket goes with it.
    if (!raw.destroyed) raw.destroy();
  });
  if (!conn.destroyed) front.handle(conn, facts);
}
