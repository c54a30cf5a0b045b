// HTTP/2 clients (ALPN h2): an http2 server that never listens is fed the
// decrypted stream of each connection; every stream is forwarded as an
// HTTP/1.1 request to the upstream.
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { KtlsDrainTarget } from '../ktls/drain.js';
import type { ConnectionFacts } from '../connection/facts.js';
import { guardJsStreamSocket } from '../handshake/js-stream-guard.js';
import { markClose } from '../plaintext-socket.js';
import type { Forwarder } from './forward.js';

export interface H2FrontOptions {
  maxHeaderSize: number;
  idleMs: number;
  /** A write the session's JS stream wrapper could not take was failed instead of crashing (js-stream-guard.ts). */
  jsStreamWriteRefused?: () => void;
  /** timeouts.headers: time to a complete header block of a stream. */
  headersMs: number;
  /** limits.maxConcurrentStreams (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
}

/** RFC 9113 §4.1, §6: what the header-block watch reads of each frame header. */
const FRAME_HEADER_LENGTH = 9;
const CLIENT_PREFACE_LENGTH = 24;
const TYPE_HEADERS = 0x1;
const TYPE_PUSH_PROMISE = 0x5;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_HEADERS = 0x4;

/**
 * Follows the frame headers a client sends (9 bytes each; payloads are
 * skipped, never copied) to time each header block: HEADERS, then
 * CONTINUATION frames up to END_HEADERS. nghttp2 reports a stream only once
 * its block is complete, so an unfinished block is invisible to the session
 * API; without this it would live until the idle timeout (timeouts.headers
 * covers HTTP/1.1 only). One timer per connection, armed while a block is open.
 */
export class HeaderBlockWatch {
  /** Preface or payload bytes still to pass over. */
  private skip = CLIENT_PREFACE_LENGTH;
  private readonly header = Buffer.alloc(FRAME_HEADER_LENGTH);
  private headerBytes = 0;
  /** The frame being skipped carries END_HEADERS: the block ends with its last byte. */
  private endsBlock = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly ms: number,
    private readonly onTimeout: () => void,
  ) {}

  /** Bytes from the client, in order. */
  feed(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.stopped) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        if (this.skip === 0 && this.endsBlock) this.endBlock();
        continue;
      }
      const n = Math.min(FRAME_HEADER_LENGTH - this.headerBytes, chunk.length - off);
      chunk.copy(this.header, this.headerBytes, off, off + n);
      this.headerBytes += n;
      off += n;
      if (this.headerBytes === FRAME_HEADER_LENGTH) {
        this.headerBytes = 0;
        this.onFrame(this.header.readUIntBE(0, 3), this.header[3] ?? 0, this.header[4] ?? 0);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private onFrame(length: number, type: number, flags: number): void {
    this.skip = length;
    const opensBlock = type === TYPE_HEADERS || type === TYPE_PUSH_PROMISE;
    if (!opensBlock && type !== TYPE_CONTINUATION) return;
    if (opensBlock && !this.timer) {
      this.timer = setTimeout(() => {
        this.stop();
        this.onTimeout();
      }, this.ms);
      this.timer.unref();
    }
    this.endsBlock = (flags & FLAG_END_HEADERS) !== 0;
    if (this.endsBlock && length === 0) this.endBlock();
  }

  private endBlock(): void {
    this.endsBlock = false;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** How long a connection may stay unread with nothing left to write before its session counts as finished. */
const UNWANTED_MS = 1000;

/**
 * nghttp2 stops wanting input once it has terminated a session itself (a
 * flood such as rapid reset, a protocol error: it sends GOAWAY), and node
 * then stops reading the connection (Http2Session::MaybeStopReading) but
 * never closes it, although nghttp2 says the application should drop the
 * connection when it wants neither to read nor to write. Unread, the client's
 * FIN is never seen either, so the connection would hold its slot until the
 * idle timeout. node also stops reading while one of its writes is in flight
 * (a slow reader): that connection has bytes queued, so only "paused with
 * nothing left to write" for UNWANTED_MS is taken as finished. One timer per
 * connection, and only while it is paused.
 */
function dropWhenUnwanted(conn: Duplex, session: http2.ServerHttp2Session): void {
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    timer = undefined;
    if (session.destroyed || conn.readableFlowing !== false) return;
    if (conn.writableLength > 0) {
      timer = setTimeout(check, UNWANTED_MS).unref();
      return;
    }
    markClose(conn, 'error');
    session.destroy();
    if (!conn.destroyed) conn.destroy();
  };
  const onPause = (): void => {
    timer ??= setTimeout(check, UNWANTED_MS).unref();
  };
  const onResume = (): void => {
    clearTimeout(timer);
    timer = undefined;
  };
  conn.on('pause', onPause);
  conn.on('resume', onResume);
  session.once('close', () => {
    onResume();
    conn.off('pause', onPause);
    conn.off('resume', onResume);
  });
}

/**
 * A session's facts and a connection's session live on the objects
 * themselves, not in WeakMaps (V8 promotes young WeakMap keys and values
 * through every scavenge: see proxy/fronts/http.ts).
 */
const kFacts = Symbol('ktls-sidecar.h2Facts');
const kSession = Symbol('ktls-sidecar.h2Session');
type TaggedSession = http2.ServerHttp2Session & { [kFacts]?: ConnectionFacts };
type TaggedConn = Duplex & { [kSession]?: http2.ServerHttp2Session };

export class H2Front {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private pendingFacts: ConnectionFacts | undefined;
  private lastSession: http2.ServerHttp2Session | undefined;
  private draining = false;

  private readonly headersMs: number;

  constructor(forwarder: Forwarder, opts: H2FrontOptions) {
    this.headersMs = opts.headersMs;
    this.server = http2.createServer({
      maxSessionMemory: 64,
      // Each stream is one upstream request: bound them per connection (node's default is 2^32-1).
      settings: { maxHeaderListSize: opts.maxHeaderSize, maxConcurrentStreams: opts.maxConcurrentStreams },
      maxSendHeaderBlockLength: opts.maxHeaderSize,
    });
    if (opts.idleMs > 0) this.server.setTimeout(opts.idleMs);
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      // 'session' fires synchronously inside emit('connection'), so the facts
      // set just before belong to this session.
      if (this.pendingFacts) (session as TaggedSession)[kFacts] = this.pendingFacts;
      this.lastSession = session;
      this.sessions.add(session);
      // node:http2 wraps our plaintext Duplex in a JSStreamSocket: a write it
      // cannot take fails that one connection instead of the process.
      guardJsStreamSocket(session.socket, () => opts.jsStreamWriteRefused?.());
      session.once('close', () => this.sessions.delete(session));
      session.on('error', () => undefined);
      if (this.draining) session.close();
    });
    this.server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      const facts = (req.stream.session as TaggedSession | undefined)?.[kFacts];
      if (!facts) {
        res.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      forwarder.web(req, res, facts);
    });
  }

  handle(conn: Duplex, facts: ConnectionFacts): void {
    this.pendingFacts = facts;
    this.lastSession = undefined;
    try {
      this.server.emit('connection', conn);
      const session = this.takeLastSession();
      if (session) {
        (conn as TaggedConn)[kSession] = session;
        this.watchHeaderBlocks(conn, session);
        dropWhenUnwanted(conn, session);
      }
    } finally {
      this.pendingFacts = undefined;
      this.lastSession = undefined;
    }
  }

  /** kTLS drain hook of `conn` (looked up lazily: it may be made before handle()): GOAWAY, close when streams end. */
  drainTarget(conn: Duplex): KtlsDrainTarget {
    return {
      protocol: 'h2',
      requestDrain: () => {
        const session = (conn as TaggedConn)[kSession];
        // close() = GOAWAY; node destroys the session (and ends the socket) when its last stream ends.
        if (session && !session.closed && !session.destroyed) session.close();
        else if (!session && !conn.destroyed) conn.end();
      },
      close: () => {
        markClose(conn, 'ktls_drain');
        const session = (conn as TaggedConn)[kSession];
        if (session && !session.destroyed) session.destroy();
        if (!conn.destroyed) conn.destroy();
      },
    };
  }

  /** GOAWAY to every session: running streams finish, no new ones start. */
  drain(): void {
    this.draining = true;
    for (const s of this.sessions) s.close();
  }

  /**
   * timeouts.headers for HTTP/2: a header block still open after headersMs
   * ends the session (GOAWAY ENHANCE_YOUR_CALM; no other frame can be taken
   * while a block is open anyway), closed as headers_timeout. Only for a JS
   * stream (the connection path's decrypted connection): on a net.Socket the session
   * reads the handle natively and a 'data' listener would compete with it.
   */
  private watchHeaderBlocks(conn: Duplex, session: http2.ServerHttp2Session): void {
    if (this.headersMs <= 0 || conn instanceof net.Socket) return;
    const watch = new HeaderBlockWatch(this.headersMs, () => {
      markClose(conn, 'headers_timeout');
      // destroy(err, code) sends GOAWAY with `code`, then ends the connection
      // (without an error node would send NO_ERROR; the session's 'error'
      // listener takes the error).
      if (!session.destroyed) session.destroy(new Error('HTTP/2 header block not complete in time'), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    });
    // An extra listener sees the same chunks the session's stream wrapper
    // reads; the session already set the flow (paused or flowing).
    const feed = (d: Buffer): void => watch.feed(d);
    conn.on('data', feed);
    session.once('close', () => {
      watch.stop();
      conn.off('data', feed);
    });
  }

  /** The session the synchronous 'session' handler saw during emit() (a method so TS does not narrow it away). */
  private takeLastSession(): http2.ServerHttp2Session | undefined {
    return this.lastSession;
  }

  get openSessions(): number {
    return this.sessions.size;
  }
}
