// The HTTP front: HTTP/1.1 (+ WebSocket upgrades) on a node:http server that
// never listens, and HTTP/2 via H2Front, chosen by the negotiated ALPN. It
// receives plain Duplex streams and reads TLS facts from ConnectionFacts.
//
// kTLS drain seam (for the connection path, see proxy/ktls/drain.ts): both fronts
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
import type { ConnectionFacts } from '../connection/facts.js';
import { markClose } from '../plaintext-socket.js';
import { lingerThenDestroy } from '../linger.js';
import { endGracefully, sendError } from './answers.js';
import { type FrontMetrics, Forwarder } from './forward.js';
import { requestProblem } from './headers.js';
import { H2Front } from './h2.js';

/**
 * One HTTP/1.1 connection's state, kept on the connection object itself. Not
 * in a WeakMap: on V8 a WeakMap entry whose key is a young object keeps key
 * and value alive through every scavenge, so each connection (and what it
 * references) would be promoted to the old generation and collected only by
 * a full mark-compact (measured: 10 ms scavenges and the p99 stall).
 */
interface Http1Conn {
  readonly facts: ConnectionFacts;
  /** Responses not finished yet, in arrival order (for per-connection drain). */
  readonly inflight: http.ServerResponse[];
  /** Its kTLS drain was requested. */
  draining: boolean;
  /** Handed to the WebSocket path (no longer HTTP/1.1). */
  upgraded: boolean;
  /** Its request stream broke (client error): no more answers, close once in-flight responses end. */
  broken: boolean;
}

const kConn = Symbol('ktls-sidecar.http1Conn');
const kTarget = Symbol('ktls-sidecar.drainTarget');
type Tagged = Duplex & { [kConn]?: Http1Conn; [kTarget]?: KtlsDrainTarget };

function stateOf(conn: Duplex): Http1Conn | undefined {
  return (conn as Tagged)[kConn];
}

export interface HttpFrontOptions {
  upstreamUrl: string;
  clientCertHeader: string;
  maxHeaderSize: number;
  timeouts: { headers: number; idle: number; upstreamConnect: number; upstreamResponse: number; requestBody: number };
  /** upstream.maxSockets / upstream.maxPending. */
  upstream: { maxSockets: number; maxPending: number };
  /** limits.maxConcurrentStreams (HTTP/2) and limits.minRequestBodyRate (bytes/s, 0 = none). */
  limits: { maxConcurrentStreams: number; minRequestBodyRate: number };
  /** ktls.spliceMinBody: HTTP/1.1 response bodies from this Content-Length on are spliced where kTLS TX can be lent (0 or absent: never). */
  spliceMinBody?: number;
  metrics: FrontMetrics;
}

export class HttpFront {
  private readonly server: http.Server;
  private readonly forwarder: Forwarder;
  private readonly h2: H2Front;
  private draining = false;

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
      spliceMinBody: opts.spliceMinBody,
      idleMs: opts.timeouts.idle,
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
      const conn = req.socket as Duplex;
      const state = stateOf(conn);
      if (!state) {
        res.destroy();
        return;
      }
      const { facts, inflight: list } = state;
      if (this.draining || state.draining) res.shouldKeepAlive = false;
      list.push(res);
      let done = false;
      const settle = (): void => {
        if (done) return;
        done = true;
        const i = list.indexOf(res);
        if (i >= 0) list.splice(i, 1);
        // The head went out with keep-alive before the drain (or the client
        // error): close after it.
        if ((state.draining || state.broken) && list.length === 0) endGracefully(conn);
      };
      res.once('finish', () => {
        settle();
        if (this.draining) this.server.closeIdleConnections();
      });
      res.once('close', settle);
      if (requestProblem(req.rawHeaders)) this.refuse(res, facts);
      else this.forwarder.web(req, res, facts);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
    // The forwarder relays a WebSocket upgrade and then the bytes both ways;
    // any other Upgrade (h2c) is served as the plain request it also is. Only
    // a WebSocket becomes a byte stream.
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      const state = stateOf(socket);
      if (state) this.forwarder.ws(req, socket, head, state.facts);
      else socket.destroy();
      if (state && req.headers.upgrade?.toLowerCase() === 'websocket') state.upgraded = true;
    });
    this.h2 = new H2Front(this.forwarder, {
      maxHeaderSize: opts.maxHeaderSize,
      idleMs: opts.timeouts.idle,
      headersMs: opts.timeouts.headers,
      maxConcurrentStreams: opts.limits.maxConcurrentStreams,
      jsStreamWriteRefused: () => opts.metrics.internalError('js_stream_write_refused'),
    });
  }

  /** Serve one decrypted connection; returns its kTLS drain hook (see the top of this file). */
  handle(conn: Duplex, facts: ConnectionFacts): KtlsDrainTarget {
    const target = this.drainTarget(conn, facts.alpn === 'h2' ? 'h2' : 'http1');
    if (facts.alpn === 'h2') {
      this.h2.handle(conn, facts);
      return target;
    }
    (conn as Tagged)[kConn] = { facts, inflight: [], draining: false, upgraded: false, broken: false };
    this.server.emit('connection', conn);
    return target;
  }

  /** The kTLS drain hook of `conn` (see the top of this file); `protocol` from the ALPN: 'h2' or 'http1'. */
  drainTarget(conn: Duplex, protocol: DrainProtocol): KtlsDrainTarget {
    const tagged = conn as Tagged;
    tagged[kTarget] ??= protocol === 'h2' ? this.h2.drainTarget(conn) : this.http1DrainTarget(conn);
    return tagged[kTarget];
  }

  private http1DrainTarget(conn: Duplex): KtlsDrainTarget {
    return {
      get protocol(): DrainProtocol {
        return stateOf(conn)?.upgraded ? 'tcp' : 'http1';
      },
      requestDrain: () => {
        const state = stateOf(conn);
        if (!state || state.upgraded) {
          // A WebSocket is a byte stream now: end our side like TCP mode does.
          markClose(conn, 'ktls_drain');
          endGracefully(conn);
          return;
        }
        state.draining = true;
        const last = state.inflight[state.inflight.length - 1];
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

  /** A request that parsed but must not be forwarded (see requestProblem): 400, counted, connection closed after it. */
  private refuse(res: http.ServerResponse, facts: ConnectionFacts): void {
    // The rest of the connection's byte stream is suspect too: close after this answer.
    res.shouldKeepAlive = false;
    res.once('close', () => {
      this.opts.metrics.httpRequest({ protocol: 'http1', status: res.statusCode, ktls: facts.ktls, durationSeconds: 0 });
    });
    sendError(res, 400, 'Bad Request');
  }

  /**
   * node:http's 'clientError': the request stream of `socket` cannot be
   * parsed further. node reports it again for every later chunk (the parser
   * stays in error), so only the first report counts. An error answer is
   * written on the socket only when no response is in flight or queued on the
   * connection; otherwise it would land inside that response (or ahead of
   * it), so those responses finish and the connection closes after them.
   */
  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const state = stateOf(socket);
    if (state?.broken) return;
    if (state) state.broken = true;
    // A socket error (a reset, a TLS alert or error) is no request to answer:
    // nothing more can be said on that connection.
    if (!state || !answerable(err) || !socket.writable) {
      socket.destroy();
      return;
    }
    const last = state.inflight[state.inflight.length - 1];
    // The connection's close line and closed_total say why (the one log line per bad client).
    if (last && !last.req.complete) {
      markClose(socket, 'bad_request');
      refuseBrokenBody(last, socket);
      return;
    }
    const answer = errorAnswer(err);
    if (err.code !== 'HPE_CLOSED_CONNECTION') markClose(socket, answer.status === 408 ? 'headers_timeout' : 'bad_request');
    // Data after a request that closes the connection (HTTP/1.0, Connection:
    // close) is a client race (RFC 9112 §9.3), not a bad request: not counted.
    if (err.code !== 'HPE_CLOSED_CONNECTION') {
      this.opts.metrics.httpRequest({ protocol: 'http1', status: answer.status, ktls: state.facts.ktls, durationSeconds: 0 });
    }
    if (last) {
      // node:http then sends `Connection: close` on it; the settle hook ends the connection after it.
      if (!last.headersSent) last.shouldKeepAlive = false;
      return;
    }
    if (err.code === 'HPE_CLOSED_CONNECTION') {
      endGracefully(socket);
      return;
    }
    const body = `${answer.text}\n`;
    socket.end(
      `HTTP/1.1 ${answer.status} ${answer.text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    // node:http's own 'data' listener keeps reading; its parser is in error, so the bytes are dropped.
    lingerThenDestroy(socket);
  }
}

/**
 * The parse error is inside the body of the newest request (bad chunk
 * framing): that request gets the 400, through its own response so it goes
 * out in its turn (the forwarder counts it; its upstream exchange then
 * leaves the answered response alone), or is cut if its head is already
 * out. Its upstream request would wait for the rest of a body that never
 * comes: once the connection is gone, abort it (the request stream closing
 * before its end makes the upstream exchange destroy its socket).
 */
function refuseBrokenBody(res: http.ServerResponse, socket: Duplex): void {
  const req = res.req;
  socket.once('close', () => {
    if (!req.complete && !req.destroyed) req.destroy(Object.assign(new Error('request body unparseable'), { code: 'ECONNRESET' }));
  });
  if (!res.headersSent) res.shouldKeepAlive = false;
  sendError(res, 400, 'Bad Request');
}

/** The status of an error answer to a request node:http could not parse. */
/** node:http's 'clientError' reports parse errors and timeouts (answered) and socket errors (not). */
function answerable(err: NodeJS.ErrnoException): boolean {
  return err.code !== undefined && (err.code.startsWith('HPE_') || err.code === 'ERR_HTTP_REQUEST_TIMEOUT');
}

function errorAnswer(err: NodeJS.ErrnoException): { status: number; text: string } {
  switch (err.code) {
    // A request line or header block over limits.maxHeaderSize (one limit covers both in node:http).
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, text: 'Request Header Fields Too Large' };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, text: 'Request Timeout' };
    default:
      return { status: 400, text: 'Bad Request' };
  }
}
