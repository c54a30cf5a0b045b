// TLS content types, handshake message types, alerts, the TLS 1.3
// KeyUpdate message and the parser for what may arrive in a handshake record
// after the handshake: the control traffic a record layer handles itself
// once OpenSSL is gone (RFC 8446 4.6.3, 6; RFC 5246 7.2).

export const ContentType = Object.freeze({
  CHANGE_CIPHER_SPEC: 20,
  ALERT: 21,
  HANDSHAKE: 22,
  APPLICATION_DATA: 23,
} as const);

export const HandshakeType = Object.freeze({
  HELLO_REQUEST: 0,
  CLIENT_HELLO: 1,
  SERVER_HELLO: 2,
  NEW_SESSION_TICKET: 4,
  END_OF_EARLY_DATA: 5,
  ENCRYPTED_EXTENSIONS: 8,
  CERTIFICATE: 11,
  SERVER_KEY_EXCHANGE: 12,
  CERTIFICATE_REQUEST: 13,
  SERVER_HELLO_DONE: 14,
  CERTIFICATE_VERIFY: 15,
  CLIENT_KEY_EXCHANGE: 16,
  FINISHED: 20,
  KEY_UPDATE: 24,
} as const);

export const AlertLevel = Object.freeze({ WARNING: 1, FATAL: 2 } as const);

export const AlertDescription = Object.freeze({
  CLOSE_NOTIFY: 0,
  UNEXPECTED_MESSAGE: 10,
  BAD_RECORD_MAC: 20,
  RECORD_OVERFLOW: 22,
  HANDSHAKE_FAILURE: 40,
  DECODE_ERROR: 50,
  INTERNAL_ERROR: 80,
  USER_CANCELED: 90,
  NO_RENEGOTIATION: 100,
} as const);

/** Parse an alert record body; null if it is not exactly two bytes (decode_error). */
export function parseAlert(body: Buffer): { level: number; description: number } | null {
  if (body.length !== 2) return null;
  return { level: body[0] ?? 0, description: body[1] ?? 0 };
}

export function buildAlert(level: number, description: number): Buffer {
  return Buffer.from([level, description]);
}

/** Handshake message header + body (type, uint24 length, body). */
export function buildHandshakeMessage(type: number, body: Buffer): Buffer {
  if (body.length > 0xffffff) throw new RangeError('handshake message too long');
  const msg = Buffer.alloc(4 + body.length);
  msg[0] = type;
  msg.writeUIntBE(body.length, 1, 3);
  body.copy(msg, 4);
  return msg;
}

/** TLS 1.3 KeyUpdate message (RFC 8446 4.6.3): request_update 1 = update_requested. */
export function buildKeyUpdate(updateRequested: boolean): Buffer {
  return buildHandshakeMessage(HandshakeType.KEY_UPDATE, Buffer.from([updateRequested ? 1 : 0]));
}

/** Parse a KeyUpdate body: true = update_requested, false = not requested, null = malformed. */
export function parseKeyUpdate(body: Buffer): boolean | null {
  if (body.length !== 1) return null;
  const v = body[0];
  if (v === 0) return false;
  if (v === 1) return true;
  return null;
}

export type PostHandshakeEvent =
  /** TLS 1.3 KeyUpdate; `requested` = update_requested (we must answer with our own). */
  | { kind: 'key_update'; requested: boolean }
  /** TLS 1.2 ClientHello after the handshake: renegotiation, which we refuse with a warning. */
  | { kind: 'renegotiation' }
  /** A protocol violation: answer with this fatal alert and close. */
  | { kind: 'fatal'; alert: number; why: string };

/** Nothing legitimate after the handshake is large; refuse to buffer more. */
const MAX_POST_HANDSHAKE_MESSAGE = 65536;

/**
 * Reassembles the plaintext of handshake records received after the
 * handshake (decrypted in JS, or handed over by the kernel as record type
 * 22) and turns them into events. Messages may span records (RFC 8446 5.1),
 * but a KeyUpdate must end its record: data after it would be under the
 * next key.
 */
export class PostHandshakeParser {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly tls13: boolean) {}

  /** Feed one handshake record's plaintext; returns the events it completes, in order. */
  push(record: Buffer): PostHandshakeEvent[] {
    const { DECODE_ERROR, UNEXPECTED_MESSAGE } = AlertDescription;
    if (record.length === 0) return [{ kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: 'empty handshake record' }];
    this.buf = this.buf.length ? Buffer.concat([this.buf, record]) : record;
    const out: PostHandshakeEvent[] = [];
    while (this.buf.length >= 4) {
      const type = this.buf[0] ?? 0;
      const len = this.buf.readUIntBE(1, 3);
      if (len > MAX_POST_HANDSHAKE_MESSAGE) return [...out, { kind: 'fatal', alert: DECODE_ERROR, why: 'oversized post-handshake message' }];
      if (this.buf.length < 4 + len) break;
      const body = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      if (this.tls13 && type === HandshakeType.KEY_UPDATE) {
        const requested = parseKeyUpdate(body);
        if (requested === null) return [...out, { kind: 'fatal', alert: DECODE_ERROR, why: 'malformed KeyUpdate' }];
        if (this.buf.length !== 0) {
          return [...out, { kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: 'KeyUpdate not at the end of its record' }];
        }
        out.push({ kind: 'key_update', requested });
      } else if (!this.tls13 && type === HandshakeType.CLIENT_HELLO) {
        out.push({ kind: 'renegotiation' });
      } else {
        return [...out, { kind: 'fatal', alert: UNEXPECTED_MESSAGE, why: `post-handshake message type ${type}` }];
      }
    }
    // A KeyUpdate header split across records is legal but the record
    // boundary is then mid-message; keep the bytes for the next record.
    if (this.buf.length > 0) this.buf = Buffer.from(this.buf);
    return out;
  }
}
