// The HTTP front: HTTP/1.1 (+ WebSocket upgrades) on a node:http server that
// never listens, and HTTP/2 via H2Front, chosen by the negotiated ALPN. It
// receives plain Duplex streams and reads TLS facts from the pipeline's facts.
//
// kTLS drain seam (for the pipeline, see proxy/ktls/drain.ts): both fronts
// (HttpFront, TcpFront) have `drainTarget(conn, protocol)`, which returns the
// connection's KtlsDrainTarget (one per connection, cached; it may be asked
// for before or after `handle()`, which returns the same object):
//
//   this.ktlsConns.track(conn, gen.front.drainTarget(conn, protocol));
//
// What the target does here:
//   HTTP/1.1  requestDrain(): the newest in-flight response gets
//             `Connection: close` (if its head is not out yet; otherwise the
//             connection closes after it), later requests on the connection
//             too; an idle keep-alive connection is ended now (close_notify +
//             FIN). A request the client sends while that close is on the
//             wire is the usual keep-alive race (RFC 9112 §9.3.1: the client
//             may retry); pipelined requests behind the marked one are cut.
//   HTTP/2    requestDrain(): GOAWAY; the session closes when its streams end.
//   WebSocket once upgraded, `protocol` reads 'tcp' (ktls.drainOnDisable
//             applies): requestDrain() ends our side.
//   close()   destroys the connection (reason `ktls_drain`); idempotent.
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { DrainProtocol, KtlsDrainTarget } from '../ktls/drain.js';
import type { HandshakeFacts } from '../pipeline/facts.js';
import { markClose } from '../pipeline/plain-connection.js';
import { type FrontMetrics, Forwarder } from './forward.js';
import { H2Front } from './h2.js';
import { attachUpgrade } from './ws.js';

export interface HttpFrontOptions {
  upstreamUrl: string;
  clientCertHeader: string;
  maxHeaderSize: number;
  timeouts: { headers: number; idle: number; upstreamConnect: number; upstreamResponse: number; requestBody: number };
  /** upstream.maxSockets / upstream.maxPending. */
  upstream: { maxSockets: number; maxPending: number };
  /** limits.maxConcurrentStreams (HTTP/2) and limits.minRequestBodyRate (bytes/s, 0 = none). */
  limits: { maxConcurrentStreams: number; minRequestBodyRate: number };
  metrics: FrontMetrics;
}

export class HttpFront {
  private readonly server: http.Server;
  private readonly forwarder: Forwarder;
  private readonly h2: H2Front;
  private readonly facts = new WeakMap<Duplex, HandshakeFacts>();
  private draining = false;
  /** Responses not finished yet, per connection, in arrival order (for per-connection drain). */
  private readonly inflight = new WeakMap<Duplex, http.ServerResponse[]>();
  /** Connections whose kTLS drain was requested. */
  private readonly drainingConns = new WeakSet<Duplex>();
  /** Connections handed to the WebSocket/Upgrade path (no longer HTTP/1.1). */
  private readonly upgraded = new WeakSet<Duplex>();
  private readonly targets = new WeakMap<Duplex, KtlsDrainTarget>();

  constructor(private readonly opts: HttpFrontOptions) {
    this.forwarder = new Forwarder({
      upstreamUrl: opts.upstreamUrl,
      clientCertHeader: opts.clientCertHeader,
      upstreamConnectMs: opts.timeouts.upstreamConnect,
      upstreamResponseMs: opts.timeouts.upstreamResponse,
      requestBodyMs: opts.timeouts.requestBody,
      minRequestBodyRate: opts.limits.minRequestBodyRate,
      maxSockets: opts.upstream.maxSockets,
      maxPending: opts.upstream.maxPending,
      metrics: opts.metrics,
    });
    this.server = http.createServer({
      maxHeaderSize: opts.maxHeaderSize,
      headersTimeout: opts.timeouts.headers,
      // Bodies may stream for long; the idle timeout guards stalls instead.
      requestTimeout: 0,
      keepAliveTimeout: opts.timeouts.idle,
      // node checks headersTimeout on this interval; keep it finer than the timeout.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(opts.timeouts.headers / 4))),
    });
    this.server.timeout = opts.timeouts.idle;
    // node:http starts its connection tracking (headersTimeout checks,
    // closeIdleConnections) on 'listening'. This server never listens (it is
    // fed connections), so start the tracking the same way.
    this.server.emit('listening');
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const facts = this.facts.get(req.socket);
      if (!facts) {
        res.destroy();
        return;
      }
      const conn = req.socket as Duplex;
      if (this.draining || this.drainingConns.has(conn)) res.shouldKeepAlive = false;
      const list = this.inflight.get(conn) ?? [];
      list.push(res);
      this.inflight.set(conn, list);
      let done = false;
      const settle = (): void => {
        if (done) return;
        done = true;
        const i = list.indexOf(res);
        if (i >= 0) list.splice(i, 1);
        // The head went out with keep-alive before the drain: close after it.
        if (this.drainingConns.has(conn) && list.length === 0) endGracefully(conn);
      };
      res.once('finish', settle);
      res.once('close', settle);
      res.once('finish', () => {
        if (this.draining) this.server.closeIdleConnections();
      });
      this.forwarder.web(req, res, facts);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
    // Client errors of a connection arrive with its socket; remember facts for the ktls label.
    attachUpgrade(this.server, this.forwarder, (s) => this.facts.get(s));
    this.server.on('upgrade', (_req: http.IncomingMessage, socket: Duplex) => this.upgraded.add(socket));
    this.h2 = new H2Front(this.forwarder, {
      maxHeaderSize: opts.maxHeaderSize,
      idleMs: opts.timeouts.idle,
      headersMs: opts.timeouts.headers,
      maxConcurrentStreams: opts.limits.maxConcurrentStreams,
    });
  }

  /** Serve one decrypted connection; returns its kTLS drain hook (see the top of this file). */
  handle(conn: Duplex, facts: HandshakeFacts): KtlsDrainTarget {
    const target = this.drainTarget(conn, facts.alpn === 'h2' ? 'h2' : 'http1');
    if (facts.alpn === 'h2') {
      this.h2.handle(conn, facts);
      return target;
    }
    this.facts.set(conn, facts);
    this.server.emit('connection', conn);
    return target;
  }

  /** The kTLS drain hook of `conn` (see the top of this file); `protocol` from the ALPN: 'h2' or 'http1'. */
  drainTarget(conn: Duplex, protocol: DrainProtocol): KtlsDrainTarget {
    let target = this.targets.get(conn);
    if (!target) {
      target = protocol === 'h2' ? this.h2.drainTarget(conn) : this.http1DrainTarget(conn);
      this.targets.set(conn, target);
    }
    return target;
  }

  private http1DrainTarget(conn: Duplex): KtlsDrainTarget {
    const upgraded = this.upgraded;
    return {
      get protocol(): DrainProtocol {
        return upgraded.has(conn) ? 'tcp' : 'http1';
      },
      requestDrain: () => {
        if (this.upgraded.has(conn)) {
          // A WebSocket is a byte stream now: end our side like TCP mode does.
          markClose(conn, 'ktls_drain');
          endGracefully(conn);
          return;
        }
        this.drainingConns.add(conn);
        const list = this.inflight.get(conn) ?? [];
        const last = list[list.length - 1];
        if (!last) {
          markClose(conn, 'ktls_drain');
          endGracefully(conn);
        } else if (!last.headersSent) {
          // node:http then writes `Connection: close` and ends the socket after this response.
          last.shouldKeepAlive = false;
        }
        // Head already sent with keep-alive: the 'finish' hook above ends the connection.
      },
      close: () => {
        markClose(conn, 'ktls_drain');
        if (!conn.destroyed) conn.destroy();
      },
    };
  }

  /** Stop keep-alive: idle HTTP/1.1 connections close now, busy ones after their response; HTTP/2 gets GOAWAY. */
  drain(): void {
    this.draining = true;
    this.forwarder.draining = true;
    this.server.closeIdleConnections();
    this.h2.drain();
  }

  close(): void {
    this.forwarder.close();
    this.server.close();
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    let status = 400;
    let text = 'Bad Request';
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      text = 'Request Header Fields Too Large';
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      text = 'Request Timeout';
      markClose(socket, 'headers_timeout');
    } else if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    this.opts.metrics.httpRequest({ protocol: 'http1', status, ktls: this.facts.get(socket)?.ktls ?? 'off', durationSeconds: 0 });
    const body = `${text}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    socket.once('finish', () => socket.destroy());
  }
}

/** End our side (close_notify + FIN on TLS), then release the stream once the write side is done. */
function endGracefully(conn: Duplex): void {
  if (conn.destroyed) return;
  const soon = (conn as Duplex & { destroySoon?: () => void }).destroySoon;
  if (typeof soon === 'function') {
    soon.call(conn);
    return;
  }
  if (conn.writable) conn.end();
  if (conn.writableFinished) conn.destroy();
  else conn.once('finish', () => conn.destroy());
}
