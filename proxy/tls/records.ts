// The one TLS record module, pure JS: the framer (record boundaries and the
// per-version size limit), handshake-message reassembly, and — on top of
// RecordProtection (./record-protection.ts) and the control messages
// (./control.ts) — the reader that turns protected records into events and
// the writer that seals them. The handshake engine frames with it; the
// record layer (proxy/record-layer/) reads and writes with it whenever a
// direction is not in the kernel. No I/O, bounded memory: the framer refuses
// anything that is not a TLS record header or is over the limit, and the
// reassembler refuses handshake messages larger than its own.

import type { TlsVersion } from '../../native/crypto-info.js';
import { AlertDescription, ContentType, PostHandshakeParser, parseAlert } from './control.js';
import type { PostHandshakeEvent } from './control.js';
import { MAX_PLAINTEXT } from './record-protection.js';
import type { RecordProtection } from './record-protection.js';

/** RFC 5246 6.2.3: TLSCiphertext.length ≤ 2^14 + 2048 (also the limit before the version is known). */
const MAX_RECORD_PAYLOAD = 16384 + 2048;
/** RFC 8446 5.2: TLSCiphertext.length ≤ 2^14 + 256. */
const MAX_TLS13_CIPHERTEXT = 16384 + 256;
const RECORD_HEADER_LENGTH = 5;
/** What a framer holds once it has handed out everything: one shared empty buffer, not a new one per record. */
const NOTHING = Buffer.alloc(0);

/** The largest protected record a peer may send under `version`. */
export function maxCiphertext(version: TlsVersion): number {
  return version === 'TLSv1.3' ? MAX_TLS13_CIPHERTEXT : MAX_RECORD_PAYLOAD;
}

export interface TlsRecord {
  type: number;
  header: Buffer;
  payload: Buffer;
  /** header + payload, as on the wire. */
  raw: Buffer;
}

/** Type 20..24 and major version 3, on however many header bytes there are (it reads the first two at most). */
function headerShapeOk(b: Buffer): boolean {
  if (b.length === 0) return true;
  const type = b[0] ?? 0;
  return type >= 20 && type <= 24 && (b.length < 2 || b[1] === 3);
}

/**
 * A malformed or inconsistent record stream: seen by the framer and the
 * reassembler here, and by the handshake engine's hello parser and tracker.
 * `notTls`: the bytes are not TLS records at all.
 */
export class TlsWireError extends Error {
  constructor(message: string, readonly notTls = false) {
    super(message);
    this.name = 'TlsWireError';
  }
}

/** A record header announcing more ciphertext than the version allows (alert record_overflow). */
export class RecordOverflowError extends TlsWireError {
  constructor(length: number, limit: number) {
    // notTls: for the engine, a first record this long is not a TLS client.
    super(`record of ${length} bytes over the limit of ${limit}`, true);
  }
}

export class RecordFramer {
  private buf: Buffer = NOTHING;

  /** `maxPayload`: the ciphertext limit (maxCiphertext(version) once the version is known). */
  constructor(private readonly maxPayload = MAX_RECORD_PAYLOAD) {}

  /** Bytes held (complete records + a partial one). */
  get length(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  /**
   * Bytes still needed to complete the record at the head of the buffer: 0 at
   * a record boundary (or when a whole record is held). With fewer than 5
   * header bytes, the bytes that complete the header (the length is unknown).
   */
  missingBytes(): number {
    const b = this.buf;
    if (b.length === 0) return 0;
    if (b.length < RECORD_HEADER_LENGTH) return RECORD_HEADER_LENGTH - b.length;
    const need = RECORD_HEADER_LENGTH + b.readUInt16BE(3);
    return need > b.length ? need - b.length : 0;
  }

  /**
   * The first complete record, without consuming it; null when incomplete.
   * Throws TlsWireError on a bad header (RecordOverflowError when it is only
   * too long), as soon as the header bytes show it.
   */
  peek(): TlsRecord | null {
    const b = this.buf;
    if (!headerShapeOk(b)) {
      throw new TlsWireError(`not a TLS record (type ${b[0]}, version ${b[1]}.${b[2]})`, true);
    }
    if (b.length < RECORD_HEADER_LENGTH) return null;
    const len = b.readUInt16BE(3);
    if (len > this.maxPayload) throw new RecordOverflowError(len, this.maxPayload);
    if (b.length < RECORD_HEADER_LENGTH + len) return null;
    // A receive that brought exactly one record (a small request's) is that record: no view to make.
    const raw = b.length === RECORD_HEADER_LENGTH + len ? b : b.subarray(0, RECORD_HEADER_LENGTH + len);
    return {
      type: raw[0] ?? 0,
      header: raw.subarray(0, RECORD_HEADER_LENGTH),
      payload: raw.subarray(RECORD_HEADER_LENGTH),
      raw,
    };
  }

  /** Consume and return the first complete record (null when incomplete). */
  take(): TlsRecord | null {
    const r = this.peek();
    if (r) this.buf = r.raw.length === this.buf.length ? NOTHING : this.buf.subarray(r.raw.length);
    return r;
  }

  /**
   * The memory of the chunks pushed so far is about to be reused by their
   * owner: keep a copy of whatever is still held (a partial record, as a rule
   * a few bytes or nothing).
   */
  detach(): void {
    if (this.buf.length > 0) this.buf = Buffer.from(this.buf);
  }

  /** Everything held, complete records and a trailing partial one. */
  takeAll(): Buffer {
    const b = this.buf;
    this.buf = NOTHING;
    return b;
  }
}

export interface HandshakeMessage {
  type: number;
  body: Buffer;
}

/** Handshake messages may span records or share one record (RFC 8446 5.1). */
export class HandshakeReassembler {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxMessageLength = 256 * 1024) {}

  /** True when no partial message is held. */
  get empty(): boolean {
    return this.buf.length === 0;
  }

  /** The bytes of a message still being assembled (to peek at a ClientHello early). */
  get pending(): Buffer {
    return this.buf;
  }

  push(data: Buffer): HandshakeMessage[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : Buffer.from(data);
    const msgs: HandshakeMessage[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUIntBE(1, 3);
      if (len > this.maxMessageLength) throw new TlsWireError(`handshake message of ${len} bytes over the limit`);
      if (this.buf.length < 4 + len) break;
      msgs.push({ type: this.buf[0] ?? 0, body: this.buf.subarray(4, 4 + len) });
      this.buf = this.buf.subarray(4 + len);
    }
    return msgs;
  }

  /** Zero and drop what is held (it may be decrypted handshake data). */
  wipe(): void {
    this.buf.fill(0);
    this.buf = Buffer.alloc(0);
  }
}

/** One event from a receiving direction, in order. */
export type RxEvent =
  | { kind: 'data'; data: Buffer }
  | { kind: 'alert'; level: number; description: number }
  | PostHandshakeEvent;

/**
 * What one record received after the handshake means, as events: the same
 * for records opened in JS and for records the kernel decrypted.
 */
export function recordEvents(type: number, data: Buffer, parser: PostHandshakeParser): RxEvent[] {
  switch (type) {
    case ContentType.APPLICATION_DATA:
      return data.length > 0 ? [{ kind: 'data', data }] : []; // an empty record is legal, carries nothing
    case ContentType.ALERT: {
      const alert = parseAlert(data);
      return alert
        ? [{ kind: 'alert', level: alert.level, description: alert.description }]
        : [{ kind: 'fatal', alert: AlertDescription.DECODE_ERROR, why: 'malformed alert' }];
    }
    case ContentType.HANDSHAKE:
      return parser.push(data);
    default:
      return [{ kind: 'fatal', alert: AlertDescription.UNEXPECTED_MESSAGE, why: `record type ${type} after the handshake` }];
  }
}

/**
 * The receiving side of an established connection: frames ciphertext into
 * records (per-version limit), opens them, and turns them into events. A
 * TLS 1.3 KeyUpdate moves `rx` to the next key before the next record is
 * opened (records after it use the new key). A `decrypt_error:` prefix on a
 * fatal event's `why` marks an authentication failure.
 */
export class RecordReader {
  private readonly framer: RecordFramer;
  private readonly queue: RxEvent[] = [];
  private readonly parser: PostHandshakeParser;
  private failed = false;
  records = 0;

  constructor(readonly rx: RecordProtection) {
    this.framer = new RecordFramer(maxCiphertext(rx.version));
    this.parser = new PostHandshakeParser(rx.version === 'TLSv1.3');
  }

  push(bytes: Buffer): void {
    if (bytes.length > 0) this.framer.push(bytes);
  }

  /**
   * push() for a caller that reuses `bytes`' memory as soon as this returns
   * (the record layer's receive buffer, shared by every connection of the
   * thread): every whole record is opened now — its events wait in order for
   * next(), as plaintext of their own — and only a trailing partial record is
   * copied. The ciphertext itself is never copied.
   */
  pushTransient(bytes: Buffer): void {
    if (this.failed) return; // nothing more is opened, and nothing needs keeping
    this.push(bytes);
    while (this.openNext());
    this.framer.detach();
  }

  /** See RecordFramer.missingBytes(): what completes the record at the head. */
  missingBytes(): number {
    return this.framer.missingBytes();
  }

  /** The next event, or null when more ciphertext is needed. After a `fatal` event, always null. */
  next(): RxEvent | null {
    for (;;) {
      const queued = this.queue.shift();
      if (queued) return queued;
      if (!this.openNext()) return null;
    }
  }

  /**
   * Open the record at the head of the framer and queue its events (a failure
   * queues a `fatal` event and stops the reader). False when there is no
   * complete record, or the reader has failed.
   */
  private openNext(): boolean {
    if (this.failed) return false;
    let rec: TlsRecord | null;
    try {
      rec = this.framer.take();
    } catch (err) {
      if (err instanceof RecordOverflowError) return this.fail(AlertDescription.RECORD_OVERFLOW, 'record over the maximum size');
      return this.fail(AlertDescription.UNEXPECTED_MESSAGE, 'not a TLS record');
    }
    if (!rec) return false;
    if (this.rx.version === 'TLSv1.3' && rec.type !== ContentType.APPLICATION_DATA) {
      // After the handshake everything is protected: a plaintext record is a violation.
      return this.fail(AlertDescription.UNEXPECTED_MESSAGE, `unprotected record type ${rec.type}`);
    }
    const opened = this.rx.open(rec.header, rec.payload);
    if (!opened) return this.fail(AlertDescription.BAD_RECORD_MAC, 'record failed authentication', true);
    this.records++;
    for (const ev of recordEvents(opened.type, opened.data, this.parser)) {
      if (ev.kind === 'key_update') this.rx.keyUpdate(); // before the next record is opened
      this.queue.push(ev);
      if (ev.kind === 'fatal') {
        this.failed = true;
        break;
      }
    }
    return true;
  }

  /** Queue the fatal event (after every event before it) and stop: always true (an event was queued). */
  private fail(alert: number, why: string, decryptError = false): true {
    this.failed = true;
    this.framer.takeAll();
    this.queue.push({ kind: 'fatal', alert, why: decryptError ? `decrypt_error: ${why}` : why });
    return true;
  }
}

/** The sending side in JS: application data in ≤ 2^14-byte records, and single control records. */
export class RecordWriter {
  /** Records sealed (data and control). */
  records = 0;

  constructor(readonly tx: RecordProtection) {}

  /** Seal `chunks` as application data records; one buffer for one write. */
  sealData(chunks: Buffer[]): Buffer {
    const out: Buffer[] = [];
    for (const c of chunks) {
      for (let o = 0; o < c.length; o += MAX_PLAINTEXT) {
        out.push(this.tx.seal(ContentType.APPLICATION_DATA, c.subarray(o, o + MAX_PLAINTEXT)));
        this.records++;
      }
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** Seal one record of `type` (alert, handshake message). */
  sealRecord(type: number, body: Buffer): Buffer {
    this.records++;
    return this.tx.seal(type, body);
  }
}
