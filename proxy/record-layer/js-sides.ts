// A direction in JS: ciphertext to/from the raw socket, through the
// proxy/tls/records.ts writer and reader. Used for RX in `tx` mode, and for
// both directions when the decision keeps the keys in userspace or the
// install failed before any key reached the kernel (the connection survives
// in userspace).

import type net from 'node:net';
import { resumeReading } from '../handshake/read-control.js';
import type { RecordReader } from '../tls/records.js';
import { RecordWriter } from '../tls/records.js';
import type { RecordProtection } from '../tls/record-protection.js';
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

  constructor(private readonly raw: net.Socket, private readonly reader: RecordReader, private readonly sink: RxSink) {}

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
    this.raw.pause();
  }

  resume(): void {
    this.pump();
    if (this.sink.wanted()) this.raw.resume();
  }

  stop(): void {
    this.raw.pause();
  }

  /** The reader already moved to the next key when it parsed the KeyUpdate. */
  rekey(): 'ok' {
    return 'ok';
  }

  close(): void {
    this.reader.rx.wipe();
  }

  /**
   * Every record still in the reader was sent before this FIN. The reader
   * only drains while the owner reads (backpressure, or a front that has not
   * started reading yet), so the EOF waits for pump() to find it empty;
   * ending here would drop those records.
   */
  private onFin(): void {
    this.finSeen = true;
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
