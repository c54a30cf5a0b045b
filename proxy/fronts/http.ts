// The HTTP front: HTTP/1.1 (+ WebSocket upgrades) on a node:http server that
// never listens, and HTTP/2 via H2Front, chosen by the negotiated ALPN. It
// receives plain Duplex streams and reads TLS facts from the pipeline's facts.
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { HandshakeFacts } from '../pipeline/facts.js';
import { markClose } from '../pipeline/plain-connection.js';
import { type FrontMetrics, Forwarder } from './forward.js';
import { H2Front } from './h2.js';
import { attachUpgrade } from './ws.js';

export interface HttpFrontOptions {
  upstreamUrl: string;
  clientCertHeader: string;
  maxHeaderSize: number;
  timeouts: { headers: number; idle: number; upstreamConnect: number; upstreamResponse: number };
  metrics: FrontMetrics;
}

export class HttpFront {
  private readonly server: http.Server;
  private readonly forwarder: Forwarder;
  private readonly h2: H2Front;
  private readonly facts = new WeakMap<Duplex, HandshakeFacts>();
  private draining = false;

  constructor(private readonly opts: HttpFrontOptions) {
    this.forwarder = new Forwarder({
      upstreamUrl: opts.upstreamUrl,
      clientCertHeader: opts.clientCertHeader,
      upstreamConnectMs: opts.timeouts.upstreamConnect,
      upstreamResponseMs: opts.timeouts.upstreamResponse,
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
      if (this.draining) res.shouldKeepAlive = false;
      res.once('finish', () => {
        if (this.draining) this.server.closeIdleConnections();
      });
      this.forwarder.web(req, res, facts);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
    // Client errors of a connection arrive with its socket; remember facts for the ktls label.
    attachUpgrade(this.server, this.forwarder, (s) => this.facts.get(s));
    this.h2 = new H2Front(this.forwarder, { maxHeaderSize: opts.maxHeaderSize, idleMs: opts.timeouts.idle });
  }

  /** Serve one decrypted connection. */
  handle(conn: Duplex, facts: HandshakeFacts): void {
    if (facts.alpn === 'h2') {
      this.h2.handle(conn, facts);
      return;
    }
    this.facts.set(conn, facts);
    this.server.emit('connection', conn);
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
