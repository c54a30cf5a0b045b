// TCP mode: after the handshake, bytes go to upstream.address both ways.
// Half-close is honoured (a client FIN/close_notify becomes an upstream FIN
// and vice versa); an optional PROXY v2 header precedes the client's bytes.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { HandshakeFacts } from '../pipeline/facts.js';
import { markClose } from '../pipeline/plain-connection.js';
import type { SidecarMetrics } from '../admin/metrics.js';
import { upstreamReason } from './forward.js';
import { buildProxyV2Header } from './proxy-protocol.js';

export interface TcpFrontOptions {
  /** host:port */
  upstreamAddress: string;
  proxyProtocol: 'off' | 'v2';
  upstreamConnectMs: number;
  idleMs: number;
  metrics: Pick<SidecarMetrics, 'upstreamError'>;
}

/** Split `host:port` / `[v6]:port`. */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[(.+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m?.[1] || !m[2]) throw new Error(`bad host:port ${address}`);
  return { host: m[1], port: Number(m[2]) };
}

export class TcpFront {
  private readonly conns = new Set<Duplex>();

  constructor(private readonly opts: TcpFrontOptions) {}

  handle(conn: Duplex, facts: HandshakeFacts): void {
    const { host, port } = splitHostPort(this.opts.upstreamAddress);
    this.conns.add(conn);
    conn.once('close', () => this.conns.delete(conn));
    // Hold client bytes until the upstream is connected (and the PROXY header is out).
    conn.pause();
    const upstream = net.connect({ host, port, allowHalfOpen: true });
    let connected = false;
    const connectTimer =
      this.opts.upstreamConnectMs > 0
        ? setTimeout(() => {
            this.opts.metrics.upstreamError('connect_timeout');
            upstream.destroy();
            conn.destroy();
          }, this.opts.upstreamConnectMs)
        : undefined;
    upstream.once('connect', () => {
      connected = true;
      if (connectTimer) clearTimeout(connectTimer);
      upstream.setNoDelay(true);
      if (this.opts.proxyProtocol === 'v2') {
        upstream.write(
          buildProxyV2Header({
            sourceAddress: facts.remoteAddress,
            sourcePort: facts.remotePort,
            destAddress: facts.localAddress,
            destPort: facts.localPort,
            alpn: facts.alpn,
            servername: facts.servername,
            tlsVersion: facts.tlsVersion,
            cipher: facts.cipher,
          }),
        );
      }
      // pipe() with end:true forwards each side's end as the other's FIN,
      // while allowHalfOpen keeps the reverse direction open.
      conn.pipe(upstream);
      upstream.pipe(conn);
      if (this.opts.idleMs > 0) {
        upstream.setTimeout(this.opts.idleMs, () => {
          upstream.destroy();
          conn.destroy();
        });
      }
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (connectTimer) clearTimeout(connectTimer);
      this.opts.metrics.upstreamError(upstreamReason(err));
      markClose(conn, 'upstream_error');
      conn.destroy();
    });
    upstream.once('end', () => {
      // The upstream finished first (client may still be sending: half-close).
      markClose(conn, 'upstream_close');
    });
    upstream.once('close', () => {
      // Both halves done (or upstream failed): make sure the client side goes too.
      if (!conn.destroyed && (conn.writableFinished || !connected)) conn.destroy();
    });
    conn.once('end', () => markClose(conn, 'client_close'));
    conn.on('error', () => upstream.destroy());
    conn.once('close', () => {
      if (!upstream.destroyed) upstream.destroy();
    });
  }

  /** TCP streams cannot be asked to stop; the drain waits for them and then cuts. */
  get open(): number {
    return this.conns.size;
  }
}
