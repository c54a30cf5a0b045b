// HTTP/2 clients (ALPN h2): an http2 server that never listens is fed the
// decrypted stream of each connection; every stream is forwarded as an
// HTTP/1.1 request to the upstream.
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { KtlsDrainTarget } from '../ktls/drain.js';
import type { HandshakeFacts } from '../pipeline/facts.js';
import { markClose } from '../pipeline/plain-connection.js';
import type { Forwarder } from './forward.js';

export interface H2FrontOptions {
  maxHeaderSize: number;
  idleMs: number;
  /** timeouts.headers: time to a complete header block of a stream. */
  headersMs: number;
  /** limits.maxConcurrentStreams (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
}

export class H2Front {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly facts = new WeakMap<http2.ServerHttp2Session, HandshakeFacts>();
  private pendingFacts: HandshakeFacts | undefined;
  private lastSession: http2.ServerHttp2Session | undefined;
  private readonly sessionOf = new WeakMap<Duplex, http2.ServerHttp2Session>();
  private draining = false;

  constructor(forwarder: Forwarder, opts: H2FrontOptions) {
    this.server = http2.createServer({
      maxSessionMemory: 64,
      settings: { maxHeaderListSize: opts.maxHeaderSize },
      maxSendHeaderBlockLength: opts.maxHeaderSize,
    });
    if (opts.idleMs > 0) this.server.setTimeout(opts.idleMs);
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      // 'session' fires synchronously inside emit('connection'), so the facts
      // set just before belong to this session.
      if (this.pendingFacts) this.facts.set(session, this.pendingFacts);
      this.lastSession = session;
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      session.on('error', () => undefined);
      if (this.draining) session.close();
    });
    this.server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      const facts = this.facts.get(req.stream.session as http2.ServerHttp2Session);
      if (!facts) {
        res.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      forwarder.web(req, res, facts);
    });
  }

  handle(conn: Duplex, facts: HandshakeFacts): void {
    this.pendingFacts = facts;
    this.lastSession = undefined;
    try {
      this.server.emit('connection', conn);
      const session = this.takeLastSession();
      if (session) this.sessionOf.set(conn, session);
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
        const session = this.sessionOf.get(conn);
        // close() = GOAWAY; node destroys the session (and ends the socket) when its last stream ends.
        if (session && !session.closed && !session.destroyed) session.close();
        else if (!session && !conn.destroyed) conn.end();
      },
      close: () => {
        markClose(conn, 'ktls_drain');
        const session = this.sessionOf.get(conn);
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

  /** The session the synchronous 'session' handler saw during emit() (a method so TS does not narrow it away). */
  private takeLastSession(): http2.ServerHttp2Session | undefined {
    return this.lastSession;
  }

  get openSessions(): number {
    return this.sessions.size;
  }
}
