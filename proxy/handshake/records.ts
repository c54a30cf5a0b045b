// TLS record framing and handshake-message reassembly. No crypto, bounded
// memory: the framer refuses anything that is not a TLS 1.x record header,
// and the reassembler refuses handshake messages larger than its limit.

import { TlsWireError } from './errors.js';

/** RFC 5246 6.2.3: TLSCiphertext.length ≤ 2^14 + 2048. */
export const MAX_RECORD_PAYLOAD = 16384 + 2048;
export const RECORD_HEADER_LENGTH = 5;

export interface TlsRecord {
  type: number;
  /** The record header's legacy version (0x0301..0x0303). */
  version: number;
  header: Buffer;
  payload: Buffer;
  /** header + payload, as on the wire. */
  raw: Buffer;
}

/** True when `b` starts like a TLS record header (used to sniff non-TLS clients). */
export function looksLikeRecordHeader(b: Buffer): boolean {
  if (b.length < 3) return b.length === 0 || ((b[0] ?? 0) >= 20 && (b[0] ?? 0) <= 24 && (b.length < 2 || b[1] === 3));
  const type = b[0] ?? 0;
  return type >= 20 && type <= 24 && b[1] === 3 && (b.length < 5 || b.readUInt16BE(3) <= MAX_RECORD_PAYLOAD);
}

export class RecordFramer {
  private buf: Buffer = Buffer.alloc(0);

  /** Bytes held (complete records + a partial one). */
  get length(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  /** The first complete record, without consuming it; null when incomplete. Throws TlsWireError on a bad header. */
  peek(): TlsRecord | null {
    const b = this.buf;
    if (!looksLikeRecordHeader(b.subarray(0, RECORD_HEADER_LENGTH))) {
      throw new TlsWireError(`not a TLS record (type ${b[0]}, version ${b[1]}.${b[2]})`, true);
    }
    if (b.length < RECORD_HEADER_LENGTH) return null;
    const len = b.readUInt16BE(3);
    if (b.length < RECORD_HEADER_LENGTH + len) return null;
    const raw = b.subarray(0, RECORD_HEADER_LENGTH + len);
    return {
      type: raw[0] ?? 0,
      version: raw.readUInt16BE(1),
      header: raw.subarray(0, RECORD_HEADER_LENGTH),
      payload: raw.subarray(RECORD_HEADER_LENGTH),
      raw,
    };
  }

  /** Consume and return the first complete record (null when incomplete). */
  take(): TlsRecord | null {
    const r = this.peek();
    if (r) this.buf = this.buf.subarray(r.raw.length);
    return r;
  }

  /** Everything held, complete records and a trailing partial one. */
  takeAll(): Buffer {
    const b = this.buf;
    this.buf = Buffer.alloc(0);
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
