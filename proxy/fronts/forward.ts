// Forwarding one HTTP request (HTTP/1.1 or HTTP/2 on the client side) or one
// WebSocket upgrade to the HTTP/1.1 upstream with http-proxy-3. Bodies stream
// both ways (pipe, no buffering). Upstream failures become short plain-text
// 502/504 answers, counted by reason.
import http from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import { ProxyServer } from 'http-proxy-3';
import type { HandshakeFacts } from '../pipeline/facts.js';
import type { SidecarMetrics, UpstreamErrorReason } from '../admin/metrics.js';
import { setForwardingHeaders, stripHopByHop } from './headers.js';

export interface ForwarderOptions {
  upstreamUrl: string;
  clientCertHeader: string;
  upstreamConnectMs: number;
  upstreamResponseMs: number;
  /** timeouts.requestBody: whole request body deadline, ms (0 = none). */
  requestBodyMs: number;
  /** limits.minRequestBodyRate: bytes/s per 10 s window after the first (0 = none). */
  minRequestBodyRate: number;
  /** upstream.maxSockets: upstream connections open at once. */
  maxSockets: number;
  /** upstream.maxPending: requests queued for a socket beyond maxSockets; more get 503. */
  maxPending: number;
  metrics: FrontMetrics;
}

/** The metric calls the HTTP fronts make. */
export type FrontMetrics = Pick<SidecarMetrics, 'httpRequest' | 'upstreamError'>;

interface RequestState {
  timer: NodeJS.Timeout | undefined;
  /** Set when our own deadline killed the upstream request (→ 504, not 502). */
  timedOut: 'connect' | 'response' | undefined;
  proxyReq: http.ClientRequest | undefined;
}

type AnyReq = http.IncomingMessage | Http2ServerRequest;
type AnyRes = http.ServerResponse | Http2ServerResponse;

/** Map an upstream socket error to the metric's reason set. */
export function upstreamReason(err: NodeJS.ErrnoException): UpstreamErrorReason {
  switch (err.code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'connect_refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'dns';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'HPE_INVALID_CONSTANT':
    case 'HPE_INVALID_VERSION':
    case 'HPE_INVALID_STATUS':
    case 'HPE_INVALID_HEADER_TOKEN':
      return 'protocol';
    default:
      return 'other';
  }
}

/** A short plain-text error answer. */
export function sendError(res: AnyRes, status: number, text: string): void {
  if (res.headersSent) {
    // Too late for a status: cut the response so the client sees it incomplete.
    res.destroy();
    return;
  }
  const body = `${text}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export class Forwarder {
  private readonly proxy: ProxyServer;
  private readonly agent: http.Agent;
  private readonly states = new WeakMap<object, RequestState>();
  /** Set by the drain: responses then carry `Connection: close`. */
  draining = false;

  constructor(private readonly opts: ForwarderOptions) {
    // Keep-alive to the upstream; free sockets are dropped before a typical
    // upstream keep-alive timeout (node: 5 s) would close them under us.
    this.agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, timeout: 4000, scheduling: 'lifo' });
    this.proxy = new ProxyServer({ target: opts.upstreamUrl, agent: this.agent, xfwd: false, ws: true });
    this.proxy.on('proxyReq', (proxyReq, req, _res, _options, socket) => {
      const state = this.states.get(req);
      if (state) state.proxyReq = proxyReq;
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
      // The upstream's hop-by-hop headers are for the upstream hop only.
      stripHopByHop(proxyRes.headers);
      if (req.httpVersionMajor === 1) {
        // Set explicitly: http-proxy-3 would otherwise copy the request's
        // Connection header (which we stripped) and override node's decision.
        const keepAlive = (res).shouldKeepAlive && !this.draining;
        proxyRes.headers.connection = keepAlive ? 'keep-alive' : 'close';
      }
    });
  }

  /** Forward one request. `facts` are the connection's (client address, SNI, client cert). */
  web(req: AnyReq, res: AnyRes, facts: HandshakeFacts): void {
    const headers = req.headers as Record<string, string | string[] | undefined>;
    const chunked = headers['transfer-encoding'] !== undefined && headers['content-length'] === undefined;
    stripHopByHop(headers);
    // Re-frame a chunked request body as chunked toward the upstream (the
    // header itself is hop-by-hop, the need for framing is not).
    if (chunked) headers['transfer-encoding'] = 'chunked';
    setForwardingHeaders(headers, facts, this.opts.clientCertHeader);
    if (this.draining && 'shouldKeepAlive' in res) res.shouldKeepAlive = false;
    const state: RequestState = { timer: undefined, timedOut: undefined, proxyReq: undefined };
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
      this.opts.metrics.httpRequest({
        protocol: req.httpVersionMajor === 2 ? 'h2' : 'http1',
        // A response cut short (client gone) still counts, with the status it had.
        status: res.statusCode,
        ktls: facts.ktls,
        durationSeconds: (performance.now() - started) / 1000,
      });
    });
    // http-proxy-3 is typed for node:http; its web path also serves http2
    // compat objects (it strips pseudo-headers for httpVersionMajor 2).
    this.proxy.web(req as http.IncomingMessage, res as http.ServerResponse, {}, (err) => {
      if (state.timer) clearTimeout(state.timer);
      if (state.timedOut === 'connect') this.fail(res, 'connect_timeout');
      else if (state.timedOut === 'response') this.fail(res, 'response_timeout');
      else this.fail(res, upstreamReason(err));
    });
  }

  /** Forward a WebSocket (or any Upgrade) handshake and then the bytes both ways. */
  ws(req: http.IncomingMessage, socket: Duplex, head: Buffer, facts: HandshakeFacts): void {
    stripHopByHop(req.headers, true);
    setForwardingHeaders(req.headers, facts, this.opts.clientCertHeader);
    let failed = false;
    const started = performance.now();
    socket.once('close', () => {
      this.opts.metrics.httpRequest({ protocol: 'ws', status: failed ? 502 : 101, ktls: facts.ktls, durationSeconds: (performance.now() - started) / 1000 });
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

  close(): void {
    this.agent.destroy();
  }

  private fail(res: AnyRes, reason: UpstreamErrorReason): void {
    const timeout = reason === 'connect_timeout' || reason === 'response_timeout';
    const status = timeout ? 504 : 502;
    this.opts.metrics.upstreamError(reason);
    const text = timeout
      ? 'upstream did not answer in time.'
      : reason === 'connect_refused' || reason === 'dns'
        ? 'upstream is not reachable.'
        : 'upstream failed.';
    sendError(res, status, text);
  }
}
