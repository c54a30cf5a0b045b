// The upstream sockets of http mode: keep-alive connections to upstream.url
// (net, or tls for an https:// URL), idle ones reused last-in first-out and
// dropped after IDLE_MS (before a typical upstream keep-alive timeout, node's
// 5 s, closes them under a request) or as soon as the upstream closes them.
// Each socket's listeners are attached once, for its life, and call whichever
// exchange uses it now (SocketUser); its timers too are made once and
// refreshed per request: the response deadline (time to the response head)
// and the idle expiry. The connect deadline exists only while connecting.
// How many sockets may be busy is the slots' business (slots.ts).
import net from 'node:net';
import tls from 'node:tls';
import { socketFd } from '../../native/index.js';
import { canControlReading, resumeReading, stopReading } from '../handshake/read-control.js';

/** Idle sockets are closed after this long (node's server keep-alive timeout is 5 s). */
export const IDLE_MS = 4000;

/** Where upstream.url points. */
export interface UpstreamTarget {
  host: string;
  port: number;
  tls: boolean;
  /** Host header for requests that carry none (as node's client sets it). */
  hostHeader: string;
  /** The URL's path and query, prefixed to every request path ('' for `/`). */
  basePath: string;
}

export function parseTarget(url: string): UpstreamTarget {
  const u = new URL(url);
  const secure = u.protocol === 'https:';
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const base = `${u.pathname}${u.search}`;
  return { host, port: Number(u.port || (secure ? 443 : 80)), tls: secure, hostHeader: u.host, basePath: base === '/' ? '' : base };
}

/** The exchange using a socket: told what happens on it. */
export interface SocketUser {
  onData(buf: Buffer): void;
  /** The upstream ended its side (FIN). */
  onEnd(): void;
  /** The socket closed; `err` if it failed. */
  onClose(err: NodeJS.ErrnoException | undefined): void;
  onDrain(): void;
  onTimeout(kind: 'connect' | 'response'): void;
}

export interface PoolOptions {
  connectMs: number;
  responseMs: number;
}

export class UpstreamSocket {
  user: SocketUser | undefined;
  /** Requests started on this socket (a reused socket has served one before the current). */
  uses = 0;
  /** Waiting for the response head: the response deadline applies. */
  awaitingHead = false;
  closed = false;
  idleSince = 0;
  private err: NodeJS.ErrnoException | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private responseTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  // The socket's listeners, made once for its life.
  private readonly onData = (buf: Buffer): void => {
    if (this.user) this.user.onData(buf);
    // Bytes nobody asked for (an idle socket): it is out of step; drop it.
    else this.socket.destroy();
  };
  private readonly onEnd = (): void => this.user?.onEnd();
  private readonly onDrain = (): void => this.user?.onDrain();
  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.err = err;
  };
  private readonly onCloseEvent = (): void => this.onClose();

  constructor(
    readonly socket: net.Socket,
    private readonly pool: UpstreamPool,
    connectMs: number,
  ) {
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
    socket.on('close', this.onCloseEvent);
    if (connectMs > 0) {
      this.connectTimer = setTimeout(() => this.user?.onTimeout('connect'), connectMs);
      this.connectTimer.unref();
      socket.once(socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect', () => clearTimeout(this.connectTimer));
    }
  }

  /** A request starts on this socket now. */
  begin(user: SocketUser, responseMs: number): void {
    this.user = user;
    this.uses++;
    this.awaitingHead = true;
    if (responseMs <= 0) return;
    if (this.responseTimer) this.responseTimer.refresh();
    else {
      this.responseTimer = setTimeout(() => this.responseDeadline(), responseMs);
      this.responseTimer.unref();
    }
  }

  /** Back to the pool, ready for the next request. */
  idle(): void {
    this.user = undefined;
    this.idleSince = performance.now();
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => {
        if (!this.user && performance.now() - this.idleSince >= IDLE_MS - 1) this.socket.destroy();
      }, IDLE_MS);
      this.idleTimer.unref();
    }
  }

  /**
   * Stop libuv reading this socket, for a splice pump to read its fd from the
   * next byte on: the bytes Node had read and not yet delivered, in order; or
   * null when its bytes cannot leave JS as they are (a TLS upstream: the fd
   * carries ciphertext) or this Node cannot stop the reads.
   */
  stopReading(): Buffer | null {
    const socket = this.socket;
    if (socket instanceof tls.TLSSocket || socketFd(socket) === null || !canControlReading(socket)) return null;
    return stopReading(socket);
  }

  /** JS reads the socket again (after stopReading; also resumes a socket a relay paused). */
  resumeReading(): void {
    resumeReading(this.socket);
  }

  /** Dropped: nobody uses it again. */
  destroy(): void {
    this.user = undefined;
    this.socket.destroy();
  }

  /**
   * Hand the bare socket over (a protocol switch: it is a byte stream now):
   * our listeners and timers go, the pool forgets it, nothing reuses it.
   */
  handOver(): net.Socket {
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('drain', this.onDrain);
    socket.off('error', this.onError);
    socket.off('close', this.onCloseEvent);
    this.user = undefined;
    this.closed = true;
    clearTimeout(this.connectTimer);
    clearTimeout(this.responseTimer);
    clearTimeout(this.idleTimer);
    this.pool.forget(this);
    return socket;
  }

  private responseDeadline(): void {
    // The timer runs from the last request start; it fires harmlessly once the head is in.
    if (this.awaitingHead && this.user) this.user.onTimeout('response');
  }

  private onClose(): void {
    this.closed = true;
    clearTimeout(this.connectTimer);
    clearTimeout(this.responseTimer);
    clearTimeout(this.idleTimer);
    this.pool.forget(this);
    const user = this.user;
    this.user = undefined;
    user?.onClose(this.err);
  }
}

export class UpstreamPool {
  /** Idle sockets, most recently used last. */
  private readonly idleSockets: UpstreamSocket[] = [];
  private readonly all = new Set<UpstreamSocket>();

  constructor(
    readonly target: UpstreamTarget,
    readonly opts: PoolOptions,
  ) {}

  /** The most recently used idle socket that is still fresh, else a new one. */
  acquire(): UpstreamSocket {
    const now = performance.now();
    for (;;) {
      const s = this.idleSockets.pop();
      if (!s) return this.connect();
      if (!s.closed && now - s.idleSince < IDLE_MS) return s;
      s.destroy();
    }
  }

  /** A new connection (a retry never takes an idle one: it could be as stale as the one that failed). */
  connect(): UpstreamSocket {
    const { host, port } = this.target;
    const socket = this.target.tls
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host, port });
    const s = new UpstreamSocket(socket, this, this.opts.connectMs);
    this.all.add(s);
    return s;
  }

  release(s: UpstreamSocket): void {
    if (s.closed) return;
    // A relay that pushed back may have left it paused, a splice stopped its reads:
    // idle, it must read (an upstream's close is seen only by reading).
    s.resumeReading();
    s.idle();
    this.idleSockets.push(s);
  }

  /** Called by a socket as it closes. */
  forget(s: UpstreamSocket): void {
    this.all.delete(s);
    const i = this.idleSockets.indexOf(s);
    if (i !== -1) this.idleSockets.splice(i, 1);
  }

  /** Sockets open now (busy and idle). */
  get size(): number {
    return this.all.size;
  }

  close(): void {
    for (const s of [...this.all]) s.destroy();
  }
}
