// One request and its response on one upstream socket: the head written as
// one string, the request body streamed with backpressure (framed by its
// Content-Length, or chunked by us), the response head parsed strictly
// (response-head.ts), 1xx heads skipped, and the body delimited by
// Content-Length, chunked (chunked.ts) or the close, handed on as it comes.
// The socket goes back to the pool only after a complete response AND a
// complete request body on a connection both sides keep; anything else
// destroys it. The subclass (the front's relay) gets the head, the body
// chunks, the end or the failure; it is the one state object of a request.
import type net from 'node:net';
import type { Readable } from 'node:stream';
import { type BodySink, ChunkedDecoder } from './chunked.js';
import type { SocketUser, UpstreamPool, UpstreamSocket } from './pool.js';
import { type ResponseHead, parseResponseHead } from './response-head.js';
import { relayed } from './external-memory.js';

/** Why an exchange failed: a socket error (its code), our deadline, or the upstream closing early. */
export interface ExchangeFailure {
  err: NodeJS.ErrnoException;
  timedOut: 'connect' | 'response' | undefined;
  /** Failed on a socket that had served a request before, with no response byte yet (the keep-alive race). */
  staleSocket: boolean;
}

const FINAL_CHUNK = '0\r\n\r\n';

function hangUp(): NodeJS.ErrnoException {
  return Object.assign(new Error('upstream closed the connection'), { code: 'ECONNRESET' });
}

export abstract class Exchange implements SocketUser, BodySink {
  protected upstream: UpstreamSocket | undefined;
  /** A response head has reached the subclass. */
  protected headSeen = false;
  private pending: Buffer | undefined;
  private bodyless = false;
  private response: ResponseHead | undefined;
  private left = 0;
  private decoder: ChunkedDecoder | undefined;
  private responseBytes = 0;
  private responseDone = false;
  private requestDone = true;
  /** Bytes after the end of the response: the socket is out of step. */
  private trailing = false;
  private reqBody: Readable | undefined;
  private chunkedBody = false;
  private onBodyData: ((chunk: Buffer) => void) | undefined;
  private onBodyEnd: (() => void) | undefined;
  private onBodyClose: (() => void) | undefined;
  private finished = false;
  /** The rest of a Content-Length body is with the subclass's splice (spliceBody): JS reads nothing meanwhile. */
  private splicing = false;

  protected constructor(private readonly pool: UpstreamPool) {}

  /** The response head (not 1xx). */
  protected abstract onHead(head: ResponseHead): void;
  /** A body chunk; call pauseResponse() to push back. */
  protected abstract onBody(chunk: Buffer): void;
  /** The response is complete; `last` is its final body chunk when it came with the end (not given to onBody). */
  protected abstract onComplete(last: Buffer | undefined): void;
  /** The exchange failed; the socket is gone. */
  protected abstract onFailure(failure: ExchangeFailure): void;
  /**
   * The upstream switched protocols (101) on a request that asked for it
   * (`upgrade` set): the socket is the caller's now, never pooled; `rest` are
   * the bytes that came after the head.
   */
  protected onSwitch(_head: ResponseHead, socket: net.Socket, _rest: Buffer): void {
    socket.destroy();
  }

  /** Would the subclass take this Content-Length body out of JS (asked once the request went out, before reads stop)? */
  protected wantsSplice(_head: ResponseHead): boolean {
    return false;
  }

  /**
   * Take the body out of JS: send `rest` (body bytes already read, maybe
   * none), then move exactly `left` more from `socket` (its reads stopped),
   * and call bodySpliced() once, unless the exchange ended first. False: not
   * now, the body stays in JS.
   */
  protected spliceBody(_rest: Buffer, _left: number, _socket: net.Socket): boolean {
    return false;
  }

  /**
   * The spliced body came back: `left` bytes still on the socket (0: all went
   * out; more: a splice stopped early, JS reads the rest), or `err` (the
   * upstream failed mid-body).
   */
  protected bodySpliced(r: { left: number } | { err: NodeJS.ErrnoException }): void {
    const s = this.upstream;
    if (this.finished || !this.splicing || !s) return;
    this.splicing = false;
    if ('err' in r) return this.fail(r.err, undefined);
    this.left = r.left;
    // finish() gives the socket back to the pool, whose release reads it again.
    if (this.left === 0) return this.responseComplete();
    s.resumeReading();
  }

  /** The request asks for a protocol switch: a 101 is expected, and the socket is never reused. */
  protected upgrade = false;

  /**
   * Send the request: `head` is the request line and fields, CRLF CRLF
   * included; `body` streams after it (chunk-framed when `chunked`).
   * `headRequest`: the response has no body whatever its fields say. `fresh`
   * forces a new connection (a retry).
   */
  protected send(head: string, body: Readable | undefined, chunked: boolean, headRequest: boolean, fresh: boolean): void {
    const s = fresh ? this.pool.connect() : this.pool.acquire();
    this.upstream = s;
    this.bodyless = headRequest;
    this.pending = undefined;
    this.response = undefined;
    this.responseBytes = 0;
    this.responseDone = false;
    this.finished = false;
    this.trailing = false;
    s.begin(this, this.pool.opts.responseMs);
    s.socket.write(head, 'latin1');
    if (!body) {
      this.requestDone = true;
      return;
    }
    this.requestDone = false;
    this.reqBody = body;
    this.chunkedBody = chunked;
    this.onBodyData = (chunk) => this.writeBody(chunk);
    this.onBodyEnd = () => this.endBody();
    // The client's request broke off (bad framing, connection gone): the
    // upstream must not wait for the rest. Not an upstream failure.
    this.onBodyClose = () => {
      if (!this.requestDone) this.abort();
    };
    body.on('data', this.onBodyData);
    body.once('end', this.onBodyEnd);
    body.once('close', this.onBodyClose);
  }

  /** Stop reading the response until resumeResponse() (the client pushed back). */
  protected pauseResponse(): void {
    this.upstream?.socket.pause();
  }

  protected resumeResponse(): void {
    this.upstream?.socket.resume();
  }

  /** End this exchange now (client gone, body too slow): the socket is destroyed unless it is back in the pool already. */
  abort(): void {
    this.finished = true;
    this.detachBody();
    const s = this.upstream;
    this.upstream = undefined;
    if (s && s.user === this) s.destroy();
  }

  /** Whether the current attempt got no response byte on a socket that served before. */
  private stale(): boolean {
    return this.responseBytes === 0 && (this.upstream?.uses ?? 0) > 1;
  }

  private writeBody(chunk: Buffer): void {
    const s = this.upstream;
    if (!s || this.finished) return;
    relayed(chunk.length);
    let ok: boolean;
    if (this.chunkedBody) {
      if (chunk.length === 0) return;
      s.socket.cork();
      s.socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      s.socket.write(chunk);
      ok = s.socket.write('\r\n', 'latin1');
      s.socket.uncork();
    } else {
      ok = s.socket.write(chunk);
    }
    if (!ok) this.reqBody?.pause();
  }

  private endBody(): void {
    if (this.finished || !this.upstream) return;
    if (this.chunkedBody) this.upstream.socket.write(FINAL_CHUNK, 'latin1');
    this.requestDone = true;
    this.detachBody();
    if (this.responseDone) this.finish();
  }

  private detachBody(): void {
    const body = this.reqBody;
    if (!body) return;
    this.reqBody = undefined;
    if (this.onBodyData) body.off('data', this.onBodyData);
    if (this.onBodyEnd) body.off('end', this.onBodyEnd);
    if (this.onBodyClose) body.off('close', this.onBodyClose);
    // Whatever the client still sends is read and dropped, not left paused
    // (node would otherwise wait on it before the next request).
    if (!body.readableEnded) body.resume();
  }

  onDrain(): void {
    this.reqBody?.resume();
  }

  onData(buf: Buffer): void {
    this.responseBytes += buf.length;
    relayed(buf.length);
    let from = 0;
    if (!this.response) {
      const data = this.pending ? Buffer.concat([this.pending, buf]) : buf;
      this.pending = undefined;
      from = this.parseHeads(data);
      if (from < 0 || this.finished) return;
      buf = data;
      if (this.trySplice(buf, from)) return;
    }
    this.readBody(buf, from);
  }

  /** Hand the rest of the body to spliceBody() if the subclass wants it and the socket allows (true: handled). */
  private trySplice(buf: Buffer, from: number): boolean {
    const s = this.upstream;
    const head = this.response;
    if (!s || !head || head.framing !== 'length' || this.decoder || this.left <= buf.length - from || !this.requestDone || !this.wantsSplice(head)) return false;
    const early = s.stopReading();
    if (!early) return false;
    this.responseBytes += early.length;
    const rest = early.length === 0 ? buf.subarray(from) : Buffer.concat([buf.subarray(from), early]);
    const left = this.left - rest.length;
    if (left > 0) {
      this.splicing = true;
      this.left = left;
      if (this.spliceBody(rest, left, s.socket)) return true;
      this.splicing = false;
      this.left += rest.length;
    }
    // All of it was read already, or not now: JS goes on (the bytes Node had read first).
    s.resumeReading();
    this.readBody(rest, 0);
    return true;
  }

  /** Parse response heads from `data` (skipping 1xx); the offset of the body, or -1 (need more, or failed). */
  private parseHeads(data: Buffer): number {
    let from = 0;
    for (;;) {
      let head: ResponseHead | undefined;
      try {
        head = parseResponseHead(from === 0 ? data : data.subarray(from));
      } catch (err) {
        this.fail(err as NodeJS.ErrnoException, undefined);
        return -1;
      }
      if (!head) {
        this.pending = from === 0 ? data : data.subarray(from);
        return -1;
      }
      from += head.size;
      if (head.status >= 200) {
        this.startBody(head);
        return this.finished ? -1 : from;
      }
      if (head.status === 101 && this.upgrade && this.upstream) {
        const s = this.upstream;
        this.upstream = undefined;
        this.finished = true;
        this.detachBody();
        this.onSwitch(head, s.handOver(), data.subarray(from));
        return -1;
      }
      // A 101 to a request that did not ask for one is out of protocol.
      if (head.status === 101) {
        this.fail(Object.assign(new Error('upstream switched protocols unasked'), { code: 'HPE_INVALID_STATUS' }), undefined);
        return -1;
      }
    }
  }

  private startBody(head: ResponseHead): void {
    this.response = head;
    if (this.upstream) this.upstream.awaitingHead = false;
    const none = this.bodyless || head.status === 204 || head.status === 304;
    if (!none && head.framing === 'chunked') this.decoder = new ChunkedDecoder();
    else this.decoder = undefined;
    this.left = none ? 0 : head.framing === 'length' ? head.contentLength : -1;
    this.headSeen = true;
    this.onHead(head);
    if (this.finished) return;
    if (this.left === 0) this.responseComplete();
  }

  private readBody(buf: Buffer, from: number): void {
    if (this.finished || from >= buf.length) return;
    if (this.responseDone) {
      this.trailing = true;
      return;
    }
    const decoder = this.decoder;
    if (decoder) {
      let end: number;
      try {
        end = decoder.feed(buf, from, this);
      } catch (err) {
        this.fail(err as NodeJS.ErrnoException, undefined);
        return;
      }
      if (end === -1 || this.finished) return;
      if (end < buf.length) this.trailing = true;
      this.responseComplete();
      return;
    }
    if (this.left < 0) {
      // Until the close.
      this.onBody(from === 0 ? buf : buf.subarray(from));
      return;
    }
    const avail = buf.length - from;
    if (avail < this.left) {
      this.decoded(from === 0 ? buf : buf.subarray(from));
      this.left -= avail;
      return;
    }
    // This chunk ends the body: it goes with the completion (one end(chunk)
    // for the front instead of a write and an end, for a small response the
    // whole body).
    if (avail > this.left) this.trailing = true;
    const last = avail === this.left && from === 0 ? buf : buf.subarray(from, from + this.left);
    this.left = 0;
    this.responseComplete(last);
  }

  /** BodySink: a body chunk, framing removed. */
  decoded(chunk: Buffer): void {
    if (!this.finished) this.onBody(chunk);
  }

  /** `last`: the body's final chunk, not yet given to onBody (Content-Length bodies). */
  private responseComplete(last?: Buffer): void {
    this.responseDone = true;
    if (this.requestDone) this.finish();
    else {
      // The upstream answered before the whole body was sent (an early
      // 413, a redirect): this socket can't carry another request.
      this.finished = true;
      this.detachBody();
      const s = this.upstream;
      this.upstream = undefined;
      s?.destroy();
    }
    this.onComplete(last);
  }

  private finish(): void {
    this.finished = true;
    const s = this.upstream;
    this.upstream = undefined;
    if (!s) return;
    const head = this.response;
    if (!head || head.close || this.trailing || this.upgrade || (head.framing === 'close' && this.left < 0)) s.destroy();
    else this.pool.release(s);
  }

  onEnd(): void {
    if (this.finished) return;
    // A body delimited by the close is complete at the upstream's FIN.
    if (this.response && this.left < 0 && !this.decoder) {
      this.responseComplete();
      return;
    }
    this.fail(hangUp(), undefined);
  }

  onClose(err: NodeJS.ErrnoException | undefined): void {
    if (this.finished) return;
    this.fail(err ?? hangUp(), undefined);
  }

  onTimeout(kind: 'connect' | 'response'): void {
    if (this.finished) return;
    const err = Object.assign(new Error(`upstream ${kind} timeout`), { code: 'ETIMEDOUT' });
    this.fail(err, kind);
  }

  private fail(err: NodeJS.ErrnoException, timedOut: 'connect' | 'response' | undefined): void {
    if (this.finished) return;
    const staleSocket = timedOut === undefined && this.stale();
    this.finished = true;
    this.detachBody();
    const s = this.upstream;
    this.upstream = undefined;
    s?.destroy();
    this.onFailure({ err, timedOut, staleSocket });
  }
}
