// Forwarding one HTTP request (HTTP/1.1 or HTTP/2 on the client side) or one
// WebSocket upgrade to the HTTP/1.1 upstream with http-proxy-3. Bodies stream
// both ways (pipe, no buffering). A request, in the order web() tells it:
// hop-by-hop headers out and ours in (headers.ts), a slot among the upstream
// sockets (upstream-pool.ts), the upstream request (sent once more if a
// reused keep-alive socket was reset under an idempotent bodiless request),
// the body watch (request-body.ts), and one count when the response closes.
// What ends it early:
//   upstream failure  a short 502/503/504 answer by reason (upstream-errors.ts),
//                     or a cut once the head is out; counted by reason.
//   slow body         408 (or a reset once the response head is out), counted
//                     as 408, not as an upstream error.
//   upstream cut      an upstream response that ends early is cut toward the
//                     client at once (HTTP/1.1: close; HTTP/2: RST_STREAM),
//                     counted as upstream error reset.
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ProxyServer } from 'http-proxy-3';
import type { ConnectionFacts } from '../connection/facts.js';
import type { SidecarEvents } from '../observe/events.js';
import type { UpstreamErrorReason } from '../vocabulary.js';
import { type AnyReq, type AnyRes, cutResponse, endGracefully, isH2, sendError } from './answers.js';
import { requestProblem, setForwardingHeaders, stripHopByHop } from './headers.js';
import { type BodyLimits, bodyPending, needsChunked, watchRequestBody } from './request-body.js';
import { UPSTREAM_ANSWERS, upstreamReason } from './upstream-errors.js';
import { UpstreamPool } from './upstream-pool.js';

export interface ForwarderOptions extends BodyLimits {
  upstreamUrl: string;
  clientCertHeader: string;
  upstreamConnectMs: number;
  upstreamResponseMs: number;
  /** upstream.maxSockets: upstream connections open at once. */
  maxSockets: number;
  /** upstream.maxPending: requests queued for a socket beyond maxSockets; more get 503. */
  maxPending: number;
  metrics: FrontMetrics;
}

/** The metric calls the HTTP fronts make. */
export type FrontMetrics = Pick<SidecarEvents, 'httpRequest' | 'upstreamError' | 'internalError'>;

interface RequestState {
  timer: NodeJS.Timeout | undefined;
  /** Set when our own deadline killed the upstream request (→ 504, not 502). */
  timedOut: 'connect' | 'response' | undefined;
  proxyReq: http.ClientRequest | undefined;
  /** The body goes chunked to the upstream (it exists and no Content-Length frames it). */
  chunked: boolean;
  /** We cut the exchange ourselves (slow body, upstream cut, client gone): later upstream errors are not answered or counted. */
  aborted: boolean;
  /** Recorded in the request metric instead of the status sent (a slow body cut after the head went out). */
  statusOverride: number | undefined;
  /** Sent once more already, after a reused keep-alive connection failed under it. */
  retried: boolean;
}

/** What http-proxy-3's ws path accepts (it destroys anything else). */
function isWebSocketUpgrade(req: http.IncomingMessage): boolean {
  return req.method === 'GET' && req.headers.upgrade?.toLowerCase() === 'websocket';
}

/**
 * A keep-alive connection the upstream closed just as we reused it (its idle
 * timeout racing the agent's): the request never reached the application, so
 * an idempotent request without a body is sent once more, on a new
 * connection, before any answer went to the client (as Node's http docs
 * advise for `request.reusedSocket`). Anything else is answered as failed.
 */
function retryable(req: AnyReq, res: AnyRes, state: RequestState, err: NodeJS.ErrnoException): boolean {
  if (state.retried || state.timedOut || res.headersSent || !state.proxyReq?.reusedSocket) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS') return false;
  if (state.chunked || Number(req.headers['content-length'] ?? 0) > 0) return false;
  return err.code === 'ECONNRESET' || err.code === 'EPIPE';
}

export class Forwarder {
  private readonly proxy: ProxyServer;
  private readonly pool: UpstreamPool;
  private readonly states = new WeakMap<object, RequestState>();
  /** Status each upgrade's upstream answered (101 when it switched). */
  private readonly wsStatus = new WeakMap<object, { status: number | undefined }>();
  /** Set by the drain: responses then carry `Connection: close`. */
  draining = false;

  constructor(private readonly opts: ForwarderOptions) {
    this.pool = new UpstreamPool(opts.maxSockets, opts.maxPending, opts.upstreamConnectMs);
    this.proxy = new ProxyServer({ target: opts.upstreamUrl, agent: this.pool.agent, xfwd: false, ws: true });
    // http-proxy-3's deleteLength pass sets `content-length: 0` on a DELETE or
    // OPTIONS without one, even when a chunked body follows (the body would
    // then reach the upstream unframed). Put the framing back just before the
    // request is made.
    this.proxy.before('web', 'stream', (req) => {
      if (this.states.get(req)?.chunked) {
        delete req.headers['content-length'];
        req.headers['transfer-encoding'] = 'chunked';
      }
      return undefined;
    });
    this.proxy.on('proxyReq', (proxyReq, req, _res, _options, socket) => {
      const state = this.states.get(req);
      if (state) state.proxyReq = proxyReq;
      if (state?.aborted) {
        proxyReq.destroy();
        return;
      }
      if (socket.connecting && opts.upstreamConnectMs > 0) {
        const t = setTimeout(() => {
          if (state) state.timedOut = 'connect';
          proxyReq.destroy();
        }, opts.upstreamConnectMs);
        socket.once('connect', () => clearTimeout(t));
        socket.once('close', () => clearTimeout(t));
      }
    });
    this.proxy.on('proxyRes', (proxyRes, req, res) => {
      const state = this.states.get(req);
      if (state?.timer) clearTimeout(state.timer);
      if (state) this.watchUpstreamBody(proxyRes, res, state);
      // The upstream's hop-by-hop headers are for the upstream hop only.
      stripHopByHop(proxyRes.headers);
      if (req.httpVersionMajor === 1) {
        // Set explicitly: http-proxy-3 would otherwise copy the request's
        // Connection header (which we stripped) and override node's decision.
        const keepAlive = res.shouldKeepAlive && !this.draining;
        proxyRes.headers.connection = keepAlive ? 'keep-alive' : 'close';
      }
    });
    this.proxy.on('proxyReqWs', (proxyReq, req) => {
      const seen = this.wsStatus.get(req);
      if (!seen) return;
      proxyReq.once('response', (r: http.IncomingMessage) => (seen.status = r.statusCode));
      proxyReq.once('upgrade', (r: http.IncomingMessage) => (seen.status = r.statusCode ?? 101));
    });
  }

  /** Forward one request. `facts` are the connection's (client address, SNI, client cert). */
  web(req: AnyReq, res: AnyRes, facts: ConnectionFacts): void {
    const headers = req.headers as Record<string, string | string[] | undefined>;
    const state: RequestState = { timer: undefined, timedOut: undefined, proxyReq: undefined, chunked: needsChunked(req), aborted: false, statusOverride: undefined, retried: false };
    stripHopByHop(headers);
    // A body without Content-Length goes chunked toward the upstream (the
    // Transfer-Encoding header is hop-by-hop, the need for framing is not;
    // HTTP/2 has no such header at all).
    if (state.chunked) headers['transfer-encoding'] = 'chunked';
    setForwardingHeaders(headers, facts, this.opts.clientCertHeader);
    if (this.draining && 'shouldKeepAlive' in res) res.shouldKeepAlive = false;
    this.states.set(req, state);
    if (this.opts.upstreamResponseMs > 0) {
      state.timer = setTimeout(() => {
        state.timedOut = 'response';
        if (state.proxyReq) state.proxyReq.destroy();
        else this.fail(res, 'response_timeout');
      }, this.opts.upstreamResponseMs);
      state.timer.unref();
    }
    const started = performance.now();
    res.once('close', () => {
      if (state.timer) clearTimeout(state.timer);
      // Whatever the upstream does after this (errors of the request
      // http-proxy-3 now destroys) is not the upstream's fault.
      state.aborted = true;
      // The client left before the response was ended (an HTTP/2 stream reset,
      // its connection closed): end the upstream request too, or its socket
      // stays busy and holds an upstream.maxSockets slot (http-proxy-3 does
      // this itself only for node:http requests).
      if (!res.writableEnded) state.proxyReq?.destroy();
      this.opts.metrics.httpRequest({
        protocol: req.httpVersionMajor === 2 ? 'h2' : 'http1',
        // A response cut short (client gone) still counts, with the status it had.
        status: state.statusOverride ?? res.statusCode,
        ktls: facts.ktls,
        durationSeconds: (performance.now() - started) / 1000,
      });
    });
    // HTTP/2 has no parser step that could refuse these (the HTTP/1.1 front refuses them before here).
    if (req.httpVersionMajor === 2 && requestProblem(req.rawHeaders)) {
      sendError(res, 400, 'Bad Request');
      return;
    }
    this.pool.admit(res, () => this.dispatch(req, res, state), () => this.fail(res, 'overloaded'));
  }

  /** Forward a WebSocket handshake and then the bytes both ways; any other Upgrade is served as a plain request. */
  ws(req: http.IncomingMessage, socket: Duplex, head: Buffer, facts: ConnectionFacts): void {
    if (!isWebSocketUpgrade(req)) {
      this.ignoreUpgrade(req, socket, facts);
      return;
    }
    stripHopByHop(req.headers, true);
    setForwardingHeaders(req.headers, facts, this.opts.clientCertHeader);
    let failed = false;
    const seen: { status: number | undefined } = { status: undefined };
    this.wsStatus.set(req, seen);
    const started = performance.now();
    socket.once('close', () => {
      // The upstream may refuse the upgrade (h2c, a non-WebSocket path): its
      // answer is relayed and counted as what it was, not as 101.
      const status = failed ? 502 : (seen.status ?? 101);
      this.opts.metrics.httpRequest({ protocol: 'ws', status, ktls: facts.ktls, durationSeconds: (performance.now() - started) / 1000 });
    });
    // Upgraded connections never go back to a pool: agent false.
    this.proxy.ws(req, socket, head, { agent: false }, (err) => {
      if (failed) return;
      failed = true;
      this.opts.metrics.upstreamError(upstreamReason(err));
      if (socket.writable && !socket.destroyed) {
        socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nupstream is not reachable.\n');
      }
    });
  }

  /**
   * http-proxy-3 relays WebSocket upgrades only and drops any other (h2c, …)
   * without a word. A server may ignore Upgrade (RFC 9110 §7.8): forward the
   * plain request it also is (web() strips Upgrade and Connection), answer on
   * this connection, then close it; counted as http1 with the real status.
   * Bytes after the head (`head`) are not read: the connection closes.
   */
  private ignoreUpgrade(req: http.IncomingMessage, socket: Duplex, facts: ConnectionFacts): void {
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    // node:http types want a net.Socket; a ServerResponse only writes to and watches the stream.
    res.assignSocket(socket as unknown as Socket);
    // The socket's close then emits the response's 'close' (where web() counts it).
    res.once('finish', () => endGracefully(socket));
    this.web(req, res, facts);
  }

  close(): void {
    this.pool.close();
  }

  /** Run in an upstream slot (held until `res` closes). */
  private dispatch(req: AnyReq, res: AnyRes, state: RequestState): void {
    this.forward(req, res, state);
    // After proxy.web: it pipes the body synchronously, and a 'data' listener
    // added before the pipe would start the flow with nobody to take it.
    if (bodyPending(req)) watchRequestBody(req, res, this.opts, () => this.bodyTooSlow(req, res, state));
  }

  private forward(req: AnyReq, res: AnyRes, state: RequestState): void {
    // http-proxy-3 is typed for node:http; its web path also serves http2
    // compat objects (it strips pseudo-headers for httpVersionMajor 2).
    this.proxy.web(req as http.IncomingMessage, res as http.ServerResponse, {}, (err) => {
      if (state.aborted) return;
      if (retryable(req, res, state, err)) {
        state.retried = true;
        state.proxyReq = undefined;
        this.forward(req, res, state);
        return;
      }
      if (state.timer) clearTimeout(state.timer);
      // Counted once: an upstream reset mid-body also ends proxyRes early.
      state.aborted = true;
      if (state.timedOut === 'connect') this.fail(res, 'connect_timeout');
      else if (state.timedOut === 'response') this.fail(res, 'response_timeout');
      else this.fail(res, upstreamReason(err));
    });
  }

  /** A request body too slow: abort the upstream request, answer 408 (or cut the response), count it as 408. */
  private bodyTooSlow(req: AnyReq, res: AnyRes, state: RequestState): void {
    state.aborted = true;
    state.proxyReq?.destroy();
    req.unpipe();
    if (res.headersSent) {
      state.statusOverride = 408;
      cutResponse(res, http2.constants.NGHTTP2_CANCEL);
      return;
    }
    if (isH2(res)) {
      // The client may still be sending: once the answer is out, end the
      // stream (RFC 9113 §8.1: RST_STREAM NO_ERROR after a complete response).
      sendError(res, 408, 'request body too slow.', () => {
        if (!res.stream.destroyed) res.stream.close(http2.constants.NGHTTP2_NO_ERROR);
      });
      return;
    }
    // The rest of the body will not be read: the connection closes after the answer.
    res.shouldKeepAlive = false;
    sendError(res, 408, 'request body too slow.');
  }

  /** An upstream response that ends before it is complete is cut toward the client at once, counted as reset. */
  private watchUpstreamBody(proxyRes: http.IncomingMessage, res: AnyRes, state: RequestState): void {
    proxyRes.once('close', () => {
      if (proxyRes.complete || state.aborted) return;
      state.aborted = true;
      this.opts.metrics.upstreamError('reset');
      cutResponse(res, http2.constants.NGHTTP2_INTERNAL_ERROR, 'upstream_error');
    });
  }

  /** Count an upstream failure and answer it (or cut the response if its head is out). */
  private fail(res: AnyRes, reason: UpstreamErrorReason): void {
    this.opts.metrics.upstreamError(reason);
    if (res.headersSent) {
      cutResponse(res, http2.constants.NGHTTP2_INTERNAL_ERROR, 'upstream_error');
      return;
    }
    const { status, text } = UPSTREAM_ANSWERS[reason];
    sendError(res, status, text);
  }
}
