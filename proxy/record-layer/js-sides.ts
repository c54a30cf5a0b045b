// A direction in JS: ciphertext to/from the raw socket, through the
// proxy/tls/records.ts writer and reader. Used for RX in `tx` mode, and for
// both directions when the decision keeps the keys in userspace or the
// install failed before any key reached the kernel (the connection survives
// in userspace).
//
// RX in `tx` mode reads the ciphertext from the fd itself, like KernelRx: the
// addon's poller and a plain recv into the thread's shared buffer, while
// libuv's reads stay stopped from the hand-off on. Through libuv each
// request's bytes also went through the raw socket's Readable (a Buffer, a
// 'data' event, a nextTick) before our reader saw them. Without the addon
// (both directions in JS), or when libuv's reads were never stopped, the raw
// socket's own reads are used.

import type net from 'node:net';
import type { Poller } from '../../native/index.js';
import { resumeReading } from '../handshake/read-control.js';
import type { RecordReader } from '../tls/records.js';
import { RecordWriter } from '../tls/records.js';
import type { RecordProtection } from '../tls/record-protection.js';
import { RX_BATCH, rxScratch } from './kernel.js';
import type { KernelSocket } from './kernel.js';
import { rawWrite } from './paths.js';
import type { Done, RxPath, RxSink, TxPath } from './paths.js';

export class JsTx implements TxPath {
  readonly where = 'js';
  readonly canRekey = true;
  bytes = 0;
  private readonly writer: RecordWriter;

  constructor(private readonly raw: net.Socket, protection: RecordProtection) {
    this.writer = new RecordWriter(protection);
  }

  get records(): number {
    return this.writer.records;
  }

  writeData(chunks: Buffer[], cb: Done): void {
    for (const c of chunks) this.bytes += c.length;
    rawWrite(this.raw, this.writer.sealData(chunks), cb);
  }

  sendRecord(type: number, body: Buffer, cb: Done): void {
    rawWrite(this.raw, this.writer.sealRecord(type, body), cb);
  }

  rekey(): Error | null {
    this.writer.tx.keyUpdate();
    return null;
  }

  keyUsage(): bigint {
    return this.writer.tx.seq;
  }

  wipe(): void {
    this.writer.tx.wipe();
  }
}

export class JsRx implements RxPath {
  readonly where = 'js';
  /** The peer's FIN arrived; the EOF follows once the reader is drained. */
  private finSeen = false;
  private poller: Poller | null = null;

  constructor(
    private readonly raw: net.Socket,
    private readonly reader: RecordReader,
    private readonly sink: RxSink,
    /** Read the fd through the addon (libuv's reads are stopped); null: the raw socket's own reads. */
    private readonly direct: KernelSocket | null = null,
  ) {}

  get records(): number {
    return this.reader.records;
  }

  start(peerEnded: boolean): void {
    this.pump();
    if (!this.sink.live()) return;
    if (peerEnded) {
      this.onFin();
      return;
    }
    if (this.direct && this.startPolling(this.direct)) return;
    this.raw.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      this.pump();
    });
    this.raw.on('end', () => this.onFin());
    resumeReading(this.raw);
    // The owner is not reading yet (the leftover filled its buffer): keep
    // the socket's backpressure until it reads, not an unbounded reader.
    if (!this.sink.wanted()) this.raw.pause();
  }

  pause(): void {
    if (this.poller) this.poller.stop();
    else this.raw.pause();
  }

  resume(): void {
    this.pump();
    if (!this.sink.wanted()) return;
    if (!this.poller) this.raw.resume();
    else if (!this.finSeen) this.poller.start();
  }

  stop(): void {
    this.pause();
  }

  /** The reader already moved to the next key when it parsed the KeyUpdate. */
  rekey(): 'ok' {
    return 'ok';
  }

  close(): void {
    if (this.poller) {
      this.poller.close();
      this.poller = null;
    }
    this.reader.rx.wipe();
  }

  /** False when the addon could not watch the fd: the raw socket's reads take over. */
  private startPolling(k: KernelSocket): boolean {
    try {
      this.poller = k.native.createPoller(k.fd, (err, hangup) => this.onReadable(k, err, hangup === false));
    } catch {
      return false;
    }
    if (this.sink.wanted()) this.poller.start();
    return true;
  }

  /**
   * True when the fd was read dry (the poller then waits for the next edge, as
   * for KernelRx). `dataOnly`: the event reported no hang-up or error. Then a
   * short read already says so: TCP's recv hands over all it holds, and what
   * arrives later (data, FIN, RST) wakes the poller again. That saves, once per
   * small request, the recv that would only say EAGAIN. A FIN already pending
   * when the event was reported would never wake it again: then read on.
   */
  private onReadable(k: KernelSocket, err: Error | null, dataOnly: boolean): boolean {
    if (!this.sink.live()) return false;
    if (err) {
      this.sink.destroy(err);
      return false;
    }
    const buf = rxScratch();
    for (let i = 0; i < RX_BATCH && this.sink.wanted(); i++) {
      let r;
      try {
        r = k.native.recvPlain(k.fd, buf);
      } catch (e) {
        // What libuv's read would have reported (ECONNRESET, ETIMEDOUT...): the connection is over.
        this.sink.destroy(e as Error);
        return false;
      }
      if (r === null) return true;
      if (r.eof) {
        this.onFin();
        return false;
      }
      // Opened out of the shared buffer before anything else runs: no copy of the ciphertext.
      this.reader.pushTransient(buf.subarray(0, r.bytes));
      this.pump();
      if (dataOnly && r.bytes < buf.length) return true;
    }
    return false;
  }

  /**
   * Every record still in the reader was sent before this FIN. The reader
   * only drains while the owner reads (backpressure, or a front that has not
   * started reading yet), so the EOF waits for pump() to find it empty;
   * ending here would drop those records.
   */
  private onFin(): void {
    this.finSeen = true;
    // Nothing follows a FIN; a level-triggered poller would report the EOF again and again.
    this.poller?.stop();
    this.pump();
  }

  private pump(): void {
    while (this.sink.wanted()) {
      const ev = this.reader.next();
      if (!ev) {
        // The reader is drained: a FIN already seen is the EOF now.
        if (this.finSeen) this.sink.peerFin();
        return;
      }
      if (!this.sink.event(ev, 'userspace', true)) return;
    }
  }
}
