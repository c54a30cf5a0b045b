// Forwarding one HTTP request (HTTP/1.1 or HTTP/2 on the client side) to the
// HTTP/1.1 upstream with the sidecar's own client (proxy/upstream/), and one
// WebSocket upgrade (upstream/tunnel.ts). Bodies stream both ways with
// backpressure, never buffered. A request, in the order web() tells it: a slot
// among the upstream sockets (upstream/slots.ts), the request head written as
// one string (headers.ts: hop-by-hop fields out, ours in), the body watch
// (request-body.ts), the response head and body relayed (Relay, one state
// object per request), and one count when the response closes. What ends it early:
//   upstream failure  a short 502/503/504 answer by reason (upstream-errors.ts),
//                     or a cut once the head is out; counted by reason. A
//                     reused keep-alive socket the upstream closed under an
//                     idempotent bodiless request: sent once more, on a new one.
//   slow body         408 (or a reset once the response head is out), counted
//                     as 408, not as an upstream error.
//   upstream cut      an upstream response that ends early is cut toward the
//                     client at once (HTTP/1.1: close; HTTP/2: RST_STREAM),
//                     counted as upstream error reset.
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConnectionFacts } from '../connection/facts.js';
import type { SidecarEvents } from '../observe/events.js';
import { Exchange, type ExchangeFailure } from '../upstream/exchange.js';
import { UpstreamPool, parseTarget } from '../upstream/pool.js';
import { upstreamPath } from '../upstream/request-path.js';
import type { ResponseHead } from '../upstream/response-head.js';
import { UpstreamSlots } from '../upstream/slots.js';
import { Tunnel } from '../upstream/tunnel.js';
import type { UpstreamErrorReason } from '../vocabulary.js';
import { type AnyReq, type AnyRes, cutResponse, endGracefully, isH2, sendError } from './answers.js';
import { requestProblem, upstreamRequestFields } from './headers.js';
import { type BodyLimits, bodyPending, needsChunked, watchRequestBody } from './request-body.js';
import { BodySplice, bodySpliceWanted, clientCanLend } from './http-splice.js';
import { TcpSplice } from './tcp-splice.js';
import { UPSTREAM_ANSWERS, upstreamReason } from './upstream-errors.js';

export interface ForwarderOptions extends BodyLimits {
  upstreamUrl: string;
  clientCertHeader: string;
  upstreamConnectMs: number;
  upstreamResponseMs: number;
  /** upstream.maxSockets: upstream connections open at once. */
  maxSockets: number;
  /** upstream.maxPending: requests queued for a socket beyond maxSockets; more get 503. */
  maxPending: number;
  /** ktls.spliceMinBody: HTTP/1.1 Content-Length bodies from this size on go through the splice pump where the client's TX can be lent (0 or absent: never). */
  spliceMinBody?: number;
  /** timeouts.idle (a spliced body re-arms the connection's timer while it moves; 0 or absent: none). */
  idleMs?: number;
  metrics: FrontMetrics;
}

/** The metric calls the HTTP fronts make. */
export type FrontMetrics = Pick<SidecarEvents, 'httpRequest' | 'upstreamError' | 'internalError'>;

/** A WebSocket handshake (anything else with Upgrade is served as a plain request). */
function isWebSocketUpgrade(req: http.IncomingMessage): boolean {
  return req.method === 'GET' && req.headers.upgrade?.toLowerCase() === 'websocket';
}

const DIGITS = /^\d+$/;
/** Characters a request target or method may not carry onto the upstream request line. */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const LINE_BREAKING = /[\x00-\x20\x7f]/;

/** HTTP/2 fields as node:http2 takes them: set-cookie as a list, other repeats joined. */
function h2Headers(flat: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const name = (flat[i] as string).toLowerCase();
    const value = flat[i + 1] as string;
    const prev = out[name];
    if (prev === undefined) out[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = `${prev}, ${value}`;
  }
  return out;
}

/** One request: its upstream exchange and what the front must remember of it. */
class Relay extends Exchange {
  /** We ended it ourselves (slow body, client gone, a failure answered): later upstream events are not answered or counted. */
  aborted = false;
  /** Recorded in the request metric instead of the status sent (a slow body cut after the head went out). */
  statusOverride: number | undefined;
  private retried = false;
  private onResDrain: (() => void) | undefined;

  constructor(
    private readonly fwd: Forwarder,
    pool: UpstreamPool,
    readonly req: AnyReq,
    readonly res: AnyRes,
    private readonly requestHead: string,
    private readonly chunked: boolean,
    /** A request body follows the head (chunked, or a Content-Length above 0). */
    readonly hasBody: boolean,
  ) {
    super(pool);
  }

  start(fresh: boolean): void {
    this.send(this.requestHead, this.hasBody ? this.req : undefined, this.chunked, this.req.method === 'HEAD', fresh);
  }

  protected onHead(head: ResponseHead): void {
    const res = this.res;
    if (res.headersSent) {
      // The front answered this request itself (a 400 for a broken body):
      // the upstream's answer has nowhere to go and is no upstream failure.
      this.aborted = true;
      this.abort();
      return;
    }
    try {
      if (isH2(res)) res.writeHead(head.status, h2Headers(head.headers));
      else {
        const keepAlive = res.shouldKeepAlive && !this.fwd.draining;
        head.headers.push('Connection', keepAlive ? 'keep-alive' : 'close');
        if (head.reason) res.writeHead(head.status, head.reason, head.headers);
        else res.writeHead(head.status, head.headers);
      }
    } catch {
      // Fields node refuses to send on (a status or value it deems invalid).
      this.abort();
      this.aborted = true;
      this.fwd.fail(res, 'protocol');
    }
  }

  protected override wantsSplice(head: ResponseHead): boolean {
    if (this.aborted || isH2(this.res)) return false;
    const facts = { minBody: this.fwd.spliceMinBody, h2: false, method: this.req.method ?? 'GET', head };
    return bodySpliceWanted(facts) && clientCanLend(this.req.socket) !== null;
  }

  protected override spliceBody(rest: Buffer, left: number, socket: Socket): boolean {
    const conn = this.req.socket;
    const stream = clientCanLend(conn);
    if (!stream || isH2(this.res)) return false;
    new BodySplice(conn, stream, socket, left, this.fwd.idleMs, {
      returned: (n) => this.bodySpliced({ left: n }),
      upstreamFailed: (err) => this.bodySpliced({ err }),
      clientFailed: (err) => {
        this.aborted = true;
        this.abort();
        conn.destroy(err);
      },
    }).start(this.res, rest);
    return true;
  }

  protected onBody(chunk: Buffer): void {
    if (this.aborted) return;
    // The two response types' write() overloads don't unify; both take a Buffer.
    if ((this.res as http.ServerResponse).write(chunk)) return;
    this.pauseResponse();
    this.onResDrain ??= () => this.resumeResponse();
    this.res.once('drain', this.onResDrain);
  }

  protected onComplete(last: Buffer | undefined): void {
    if (this.aborted) return;
    // The two response types' end() overloads don't unify; both take a Buffer.
    if (last) (this.res as http.ServerResponse).end(last);
    else this.res.end();
  }

  protected onFailure(f: ExchangeFailure): void {
    if (this.aborted) return;
    // Answered by the front itself (a 400 for a broken body): not ours to count or cut.
    if (!this.headSeen && this.res.headersSent) {
      this.aborted = true;
      return;
    }
    if (this.retryable(f)) {
      this.retried = true;
      this.start(true);
      return;
    }
    this.aborted = true;
    if (this.headSeen) {
      // The head is out: cut the response so the client sees it incomplete.
      const reason = upstreamReason(f.err);
      this.fwd.metrics.upstreamError(reason === 'protocol' ? 'protocol' : 'reset');
      cutResponse(this.res, http2.constants.NGHTTP2_INTERNAL_ERROR, 'upstream_error');
      return;
    }
    this.fwd.fail(this.res, f.timedOut === 'connect' ? 'connect_timeout' : f.timedOut === 'response' ? 'response_timeout' : upstreamReason(f.err));
  }

  /**
   * A keep-alive connection the upstream closed just as we reused it (its idle
   * timeout racing ours): the request never reached the application, so an
   * idempotent request without a body is sent once more, on a new
   * connection, before any answer went to the client. Anything else is
   * answered as failed.
   */
  private retryable(f: ExchangeFailure): boolean {
    if (this.retried || !f.staleSocket || this.res.headersSent || this.hasBody) return false;
    const m = this.req.method;
    if (m !== 'GET' && m !== 'HEAD' && m !== 'OPTIONS') return false;
    return f.err.code === 'ECONNRESET' || f.err.code === 'EPIPE';
  }
}

export class Forwarder {
  private readonly slots: UpstreamSlots;
  private readonly pool: UpstreamPool;
  /** Set by the drain: responses then carry `Connection: close`. */
  draining = false;
  readonly metrics: FrontMetrics;
  readonly spliceMinBody: number;
  readonly idleMs: number;

  constructor(private readonly opts: ForwarderOptions) {
    this.metrics = opts.metrics;
    this.spliceMinBody = opts.spliceMinBody ?? 0;
    this.idleMs = opts.idleMs ?? 0;
    this.slots = new UpstreamSlots(opts.maxSockets, opts.maxPending, opts.upstreamConnectMs);
    this.pool = new UpstreamPool(parseTarget(opts.upstreamUrl), { connectMs: opts.upstreamConnectMs, responseMs: opts.upstreamResponseMs });
  }

  /** Forward one request. `facts` are the connection's (client address, SNI, client cert). */
  web(req: AnyReq, res: AnyRes, facts: ConnectionFacts): void {
    if (this.draining && 'shouldKeepAlive' in res) res.shouldKeepAlive = false;
    const started = performance.now();
    const h2 = req.httpVersionMajor === 2;
    const url = req.url ?? '/';
    const method = req.method ?? 'GET';
    const length = req.headers['content-length'];
    // HTTP/2 has no parser step that could refuse these (the HTTP/1.1 front refuses them before here).
    if (h2 && (requestProblem(req.rawHeaders) || (length !== undefined && !DIGITS.test(length)) || LINE_BREAKING.test(url) || LINE_BREAKING.test(method))) {
      this.count(req, res, facts, started, undefined);
      sendError(res, 400, 'Bad Request');
      return;
    }
    // A body without Content-Length goes chunked toward the upstream (the
    // Transfer-Encoding field is hop-by-hop, the need for framing is not;
    // HTTP/2 has no such field at all). We frame it; the client's framing
    // fields are never copied.
    const chunked = needsChunked(req);
    const framing = chunked ? 'Transfer-Encoding: chunked\r\n' : length !== undefined ? `Content-Length: ${length}\r\n` : '';
    const target = this.pool.target;
    const head = `${method} ${upstreamPath(url, target.basePath)} HTTP/1.1\r\n${upstreamRequestFields(req, facts, this.opts.clientCertHeader, framing, target.hostHeader)}\r\n`;
    const relay = new Relay(this, this.pool, req, res, head, chunked, chunked || Number(length ?? 0) > 0);
    this.count(req, res, facts, started, relay);
    this.slots.admit(res, () => this.dispatch(relay), () => this.fail(res, 'overloaded'));
  }

  /** When the response closes: end the exchange if it is still running, count the request once. */
  private count(req: AnyReq, res: AnyRes, facts: ConnectionFacts, started: number, relay: Relay | undefined): void {
    res.once('close', () => {
      if (relay) {
        // Whatever the upstream does after this is not the upstream's fault.
        relay.aborted = true;
        // The client left before the response was ended (an HTTP/2 stream
        // reset, its connection closed): end the upstream exchange too, or
        // its socket stays busy.
        if (!res.writableEnded) relay.abort();
      }
      this.metrics.httpRequest({
        protocol: req.httpVersionMajor === 2 ? 'h2' : 'http1',
        // A response cut short (client gone) still counts, with the status it had.
        status: relay?.statusOverride ?? res.statusCode,
        ktls: facts.ktls,
        durationSeconds: (performance.now() - started) / 1000,
      });
    });
  }

  /** Forward a WebSocket handshake and then the bytes both ways; any other Upgrade is served as a plain request. */
  ws(req: http.IncomingMessage, socket: Duplex, head: Buffer, facts: ConnectionFacts): void {
    if (!isWebSocketUpgrade(req)) {
      this.ignoreUpgrade(req, socket, facts);
      return;
    }
    let failed = false;
    let status: number | undefined;
    const started = performance.now();
    socket.once('close', () => {
      // The upstream may refuse the upgrade (a non-WebSocket path): its
      // answer is relayed and counted as what it was, not as 101.
      this.metrics.httpRequest({ protocol: 'ws', status: failed ? 502 : (status ?? 101), ktls: facts.ktls, durationSeconds: (performance.now() - started) / 1000 });
    });
    // node:http let go of the socket at the upgrade: its errors are ours now,
    // and its idle timer must not cut a quiet WebSocket.
    socket.on('error', () => socket.destroy());
    (socket as Duplex & { setTimeout?: (ms: number) => unknown }).setTimeout?.(0);
    const tunnel = new Tunnel(this.pool, socket, head, req.httpVersion === '1.1', {
      answered: (s) => (status = s),
      failed: (f, headSent) => {
        if (failed) return;
        failed = true;
        this.metrics.upstreamError(f.timedOut === 'connect' ? 'connect_timeout' : f.timedOut === 'response' ? 'response_timeout' : upstreamReason(f.err));
        if (headSent || !socket.writable || socket.destroyed) socket.destroy();
        else socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nupstream is not reachable.\n');
      },
      done: () => endGracefully(socket),
      // kTLS TX lendable: upstream → client through the pump (and client → upstream with RX in the kernel).
      splice: (upstream) =>
        TcpSplice.of(socket, upstream, {
          idleMs: 0,
          upstreamFailed: (reason) => {
            if (failed) return;
            failed = true;
            this.metrics.upstreamError(reason);
            upstream.destroy();
            socket.destroy();
          },
        }),
    });
    const upgrade = `Connection: Upgrade\r\nUpgrade: ${req.headers.upgrade ?? 'websocket'}\r\n`;
    const target = this.pool.target;
    tunnel.open(`GET ${upstreamPath(req.url ?? '/', target.basePath)} HTTP/1.1\r\n${upstreamRequestFields(req, facts, this.opts.clientCertHeader, upgrade, target.hostHeader)}\r\n`);
  }

  /**
   * Only a WebSocket handshake is tunnelled; any other Upgrade (h2c, …) is
   * not ours to switch. A server may ignore Upgrade (RFC 9110 §7.8): forward the
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
    this.slots.close();
    this.pool.close();
  }

  /** Run in an upstream slot (held until the response closes). */
  private dispatch(r: Relay): void {
    r.start(false);
    const { req, res } = r;
    // Only a body can be slow (node:http emits a bodiless request before its
    // message is complete, so bodyPending alone would arm a watch per GET).
    if (r.hasBody && bodyPending(req)) watchRequestBody(req, res, this.opts, () => this.bodyTooSlow(r));
  }

  /** A request body too slow: end the upstream exchange, answer 408 (or cut the response), count it as 408. */
  private bodyTooSlow(r: Relay): void {
    const { res } = r;
    r.aborted = true;
    r.abort();
    if (res.headersSent) {
      r.statusOverride = 408;
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

  /** Count an upstream failure and answer it (or cut the response if its head is out). */
  fail(res: AnyRes, reason: UpstreamErrorReason): void {
    this.metrics.upstreamError(reason);
    if (res.headersSent) {
      cutResponse(res, http2.constants.NGHTTP2_INTERNAL_ERROR, 'upstream_error');
      return;
    }
    const { status, text } = UPSTREAM_ANSWERS[reason];
    sendError(res, status, text);
  }
}
