// tcp mode through the splice pump: the bytes of a kTLS connection move
// between the upstream socket and the kernel's TLS in the kernel
// (proxy/record-layer/splice.ts), never through JS.
//
//   upstream → client: lent TX, whenever the kernel holds TX. libuv stops
//     reading the upstream first (what Node had already read goes out first,
//     through the stream). The upstream's EOF ends the lend: the client side
//     ends as in JS (close_notify + FIN), the other direction keeps flowing.
//   client → upstream: lent RX when the kernel holds RX too (txrx); `tx`
//     keeps JS decrypting. Either way the JS pipe conn → upstream stays: it
//     carries what was decrypted in JS before the lend (the lend waits until
//     the upstream has it) and the client's end (FIN/close_notify → the
//     upstream's FIN).
//
// Failures: the side that failed is counted once (upstream: upstream_errors
// by reason; client: ktls_errors_total by stage, counted by the record
// layer) and both sides close. Socket idle timers see no spliced byte, so
// the idle timeout watches the byte counts instead. Pumps are closed before
// either socket's fd (the record layer and closeBeforeSocket see to it).
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { socketFd } from '../../native/index.js';
import { recordLayerOf } from '../connection/plain-connection.js';
import { markClose } from '../plaintext-socket.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { canControlReading, stopReading } from '../handshake/read-control.js';
import { closeBeforeSocket } from '../record-layer/splice.js';
import type { SpliceOutcome } from '../record-layer/splice.js';
import type { RecordLayerStream } from '../record-layer/stream.js';
import type { UpstreamErrorReason } from '../vocabulary.js';
import { upstreamReason } from './upstream-errors.js';

export interface TcpSpliceOptions {
  idleMs: number;
  /** Count an upstream failure and close both sides (once per connection: the front's own guard). */
  upstreamFailed(reason: UpstreamErrorReason): void;
}

type Lend = 'none' | 'lent' | 'back';

/** One tcp connection's lends. */
export class TcpSplice {
  private tx: Lend = 'none';
  private rx: Lend = 'none';
  private stopped: (() => void) | null = null;
  private idleTimer: NodeJS.Timeout | undefined;

  /**
   * The splice state of a connection whose record layer can lend TX now
   * (`ktls.splice` on, TX in the kernel, a pump in the addon), or null:
   * today's JS pipes.
   */
  static of(conn: Duplex, upstream: net.Socket, opts: TcpSpliceOptions): TcpSplice | null {
    const stream = recordLayerOf(conn);
    const fd = socketFd(upstream);
    if (!stream || fd === null || !stream.canSplice('tx') || !canControlReading(upstream)) return null;
    return new TcpSplice(conn, stream, upstream, fd, opts);
  }

  private constructor(
    private readonly conn: Duplex,
    private readonly stream: RecordLayerStream,
    private readonly upstream: net.Socket,
    private readonly fd: number,
    private readonly opts: TcpSpliceOptions,
  ) {}

  /**
   * Start both lends. The caller has connected the upstream, written the
   * PROXY header and piped conn → upstream; it reads nothing from the upstream.
   */
  start(): void {
    const { conn, stream, upstream } = this;
    closeBeforeSocket(upstream, () => stream.closeSplices());
    conn.once('close', () => clearTimeout(this.idleTimer));
    const early = stopReading(upstream);
    const lendTx = (): void => {
      if (!stream.canSplice('tx')) return; // the connection went meanwhile
      this.tx = 'lent';
      stream.spliceTx(this.fd, (o) => this.txEnded(o));
    };
    if (early.length > 0) conn.write(early, lendTx);
    else lendTx();
    if (stream.canSplice('rx')) {
      this.rx = 'lent';
      stream.spliceRx(this.fd, (cb) => this.flushToUpstream(cb), (o) => this.rxEnded(o));
    }
    if (this.opts.idleMs > 0) this.watchIdle(this.opts.idleMs);
  }

  /** Take both directions back (each run flushed), then `cb` (drain). */
  stop(cb: () => void): void {
    this.stopped = cb;
    this.stream.stopSplices();
    this.maybeStopped();
  }

  private txEnded(o: SpliceOutcome): void {
    this.tx = 'back';
    if (o.end === 'eof') {
      // The upstream's FIN: ours to the client after its last byte; the client may go on sending.
      markClose(this.conn, 'upstream_close');
      if (!this.conn.writableEnded) this.conn.end();
    } else if (o.end === 'failed') this.failed(o);
    this.maybeStopped();
  }

  private rxEnded(o: SpliceOutcome): void {
    this.rx = 'back';
    // 'eof': the stream ended its readable side; the pipe forwards that end to the upstream.
    if (o.end === 'failed') this.failed(o);
    this.maybeStopped();
  }

  private failed(o: Extract<SpliceOutcome, { end: 'failed' }>): void {
    if (o.side === 'other') {
      this.opts.upstreamFailed(upstreamReason({ code: o.error.errno } as NodeJS.ErrnoException));
      return;
    }
    // The client or the pump (counted by the record layer). A reset is the client leaving, not our error.
    const err = o.error.kind === 'closed' ? undefined : new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS splice failed: ${o.error.errno} (${o.error.stage})`, { cause: o.cause });
    this.upstream.destroy();
    this.conn.destroy(err);
  }

  private maybeStopped(): void {
    if (!this.stopped || this.tx === 'lent' || this.rx === 'lent') return;
    const cb = this.stopped;
    this.stopped = null;
    cb();
  }

  /**
   * What Node decrypted before the RX lend (conn's buffer: the pipe takes it
   * now) must reach the upstream before the pump's first byte.
   */
  private flushToUpstream(cb: () => void): void {
    const { conn, upstream } = this;
    while (conn.read() !== null);
    if (upstream.destroyed) return; // the lend was closed with it
    if (upstream.writableLength === 0) return cb();
    // Writes complete in order: this one's callback comes after every earlier one's.
    upstream.write(Buffer.alloc(0), () => cb());
  }

  /**
   * Socket timers see no spliced byte: the connection is idle once its byte
   * counts have not moved for `idleMs` (checked every quarter of it).
   */
  private watchIdle(idleMs: number): void {
    const { stream, upstream } = this;
    // Client → upstream in JS shows in bytesWritten (`tx` mode); upstream → client is all spliced.
    const activity = (): number => stream.splicedIn + stream.splicedOut + upstream.bytesWritten;
    let last = activity();
    let quietFor = 0;
    const period = Math.max(10, Math.ceil(idleMs / 4));
    this.idleTimer = setTimeout(() => {
      const now = activity();
      quietFor = now === last ? quietFor + period : 0;
      last = now;
      if (quietFor < idleMs) {
        this.idleTimer?.refresh();
        return;
      }
      markClose(this.conn, 'idle_timeout');
      upstream.destroy();
      this.conn.destroy();
    }, period);
    this.idleTimer.unref();
  }
}
