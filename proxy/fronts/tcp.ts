// TCP mode: after the handshake, bytes go to upstream.address both ways.
// Half-close is honoured (a client FIN/close_notify becomes an upstream FIN
// and vice versa); an optional PROXY v2 header precedes the client's bytes.
// On kTLS with `ktls.splice`, the directions the kernel holds are spliced
// (tcp-splice.ts); everything else runs on JS pipes.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { KtlsDrainTarget } from '../ktls/drain.js';
import type { ConnectionFacts } from '../connection/facts.js';
import { markClose } from '../plaintext-socket.js';
import { countRelayed } from '../upstream/external-memory.js';
import type { SidecarEvents } from '../observe/events.js';
import type { ProxyProtocolMode, UpstreamErrorReason } from '../vocabulary.js';
import { buildProxyV2Header } from './proxy-protocol.js';
import { TcpSplice } from './tcp-splice.js';
import { upstreamReason } from './upstream-errors.js';

export interface TcpFrontOptions {
  /** host:port */
  upstreamAddress: string;
  proxyProtocol: ProxyProtocolMode;
  upstreamConnectMs: number;
  idleMs: number;
  metrics: Pick<SidecarEvents, 'upstreamError'>;
}

/** Split `host:port` / `[v6]:port`. */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[(.+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m?.[1] || !m[2]) throw new Error(`bad host:port ${address}`);
  return { host: m[1], port: Number(m[2]) };
}

interface TcpState {
  upstream: net.Socket;
  connected: boolean;
  /** The lends to the splice pump, when any direction is spliced. */
  splice: TcpSplice | null;
  /** An upstream failure was counted (a pump and libuv may both see one reset). */
  failed: boolean;
}

/**
 * Per connection, on the connection itself rather than in WeakMaps (V8
 * promotes young WeakMap keys and values through every scavenge: see
 * proxy/fronts/http.ts).
 */
const kState = Symbol('ktls-sidecar.tcpState');
const kTarget = Symbol('ktls-sidecar.tcpDrainTarget');
type TcpConn = Duplex & { [kState]?: TcpState; [kTarget]?: KtlsDrainTarget };

export class TcpFront {
  private readonly conns = new Set<Duplex>();

  constructor(private readonly opts: TcpFrontOptions) {}

  /** Serve one connection; returns its kTLS drain hook (the same object drainTarget(conn) gives). */
  handle(conn: Duplex, facts: ConnectionFacts): KtlsDrainTarget {
    const { host, port } = splitHostPort(this.opts.upstreamAddress);
    this.conns.add(conn);
    conn.once('close', () => this.conns.delete(conn));
    // Hold client bytes until the upstream is connected (and the PROXY header is out).
    conn.pause();
    const upstream = net.connect({ host, port, allowHalfOpen: true });
    const state: TcpState = { upstream, connected: false, splice: null, failed: false };
    (conn as TcpConn)[kState] = state;
    const upstreamFailed = (reason: UpstreamErrorReason): void => {
      if (!state.failed) this.opts.metrics.upstreamError(reason);
      state.failed = true;
      markClose(conn, 'upstream_error');
      upstream.destroy();
      conn.destroy();
    };
    const connectTimer =
      this.opts.upstreamConnectMs > 0
        ? setTimeout(() => {
            this.opts.metrics.upstreamError('connect_timeout');
            upstream.destroy();
            conn.destroy();
          }, this.opts.upstreamConnectMs)
        : undefined;
    upstream.once('connect', () => {
      state.connected = true;
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
      countRelayed(conn);
      // Spliced where the record layer can lend a direction (`ktls.splice`, kTLS, a pump in the addon).
      state.splice = TcpSplice.of(conn, upstream, { idleMs: this.opts.idleMs, upstreamFailed });
      if (state.splice) {
        state.splice.start();
        return;
      }
      upstream.pipe(conn);
      countRelayed(upstream);
      if (this.opts.idleMs > 0) {
        upstream.setTimeout(this.opts.idleMs, () => {
          markClose(conn, 'idle_timeout');
          upstream.destroy();
          conn.destroy();
        });
      }
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (connectTimer) clearTimeout(connectTimer);
      upstreamFailed(upstreamReason(err));
    });
    upstream.once('end', () => {
      // The upstream finished first (client may still be sending: half-close).
      markClose(conn, 'upstream_close');
    });
    upstream.once('close', () => {
      // Both halves done (or upstream failed): make sure the client side goes too.
      if (!conn.destroyed && (conn.writableFinished || !state.connected)) conn.destroy();
    });
    conn.once('end', () => markClose(conn, 'client_close'));
    conn.on('error', () => upstream.destroy());
    conn.once('close', () => {
      if (!upstream.destroyed) upstream.destroy();
    });
    return this.drainTarget(conn);
  }

  /**
   * The kTLS drain hook of `conn` (registered by the connection path for kTLS
   * connections; the registry skips it under `ktls.drainOnDisable: keep`).
   * Looked up lazily, so it may be made before handle(). requestDrain() stops
   * forwarding and ends our side after the bytes already queued (close_notify
   * + FIN) and the upstream's; close() cuts both.
   */
  drainTarget(conn: Duplex): KtlsDrainTarget {
    const tagged = conn as TcpConn;
    const made = tagged[kTarget];
    if (made) return made;
    const target: KtlsDrainTarget = {
      protocol: 'tcp',
      requestDrain: () => {
        markClose(conn, 'ktls_drain');
        const st = tagged[kState];
        if (!st?.connected) {
          st?.upstream.destroy();
          conn.destroy();
          return;
        }
        const upstream = st.upstream;
        const wind = (): void => {
          // Stop forwarding first so nothing is written after our end.
          upstream.unpipe(conn);
          conn.unpipe(upstream);
          if (!upstream.destroyed) upstream.end();
          if (!conn.destroyed && conn.writable) conn.end();
          // The client's remaining bytes have nowhere to go; keep reading so its FIN is seen.
          conn.resume();
        };
        // Spliced directions come back first, with what their pumps read delivered.
        if (st.splice) st.splice.stop(wind);
        else wind();
      },
      close: () => {
        markClose(conn, 'ktls_drain');
        const upstream = tagged[kState]?.upstream;
        if (upstream && !upstream.destroyed) upstream.destroy();
        if (!conn.destroyed) conn.destroy();
      },
    };
    tagged[kTarget] = target;
    return target;
  }

  /** TCP streams cannot be asked to stop; the drain waits for them and then cuts. */
  get open(): number {
    return this.conns.size;
  }
}
