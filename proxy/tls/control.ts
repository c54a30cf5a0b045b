// TLS content types, handshake message types, alerts and the TLS 1.3
// KeyUpdate message: the control traffic a record layer handles itself once
// OpenSSL is gone (RFC 8446 4.6.3, 6; RFC 5246 7.2).

export const ContentType = Object.freeze({
  CHANGE_CIPHER_SPEC: 20,
  ALERT: 21,
  HANDSHAKE: 22,
  APPLICATION_DATA: 23,
} as const);
export type ContentTypeValue = (typeof ContentType)[keyof typeof ContentType];

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

export interface Alert {
  level: number;
  description: number;
}

/** Parse an alert record body; null if it is not exactly two bytes (decode_error). */
export function parseAlert(body: Buffer): Alert | null {
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
