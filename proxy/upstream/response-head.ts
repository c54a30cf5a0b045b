// The upstream's response head, parsed strictly (RFC 9112 §2–§6): we decide
// how the body is framed from it and relay its fields to the client, so
// anything a lenient parser and the client could read differently is an
// error (`protocol` in the metric) rather than a guess. Refused:
//   a status line other than `HTTP/1.0|1.1 NNN [reason]`; a header name that
//   is not a token, whitespace before the colon, obs-fold (a line starting
//   with SP/HTAB), a control character in a value; a bare CR or LF anywhere;
//   more than one Content-Length (even equal ones), a non-numeric one, or
//   Content-Length together with Transfer-Encoding; a head over the limit.
// Hop-by-hop fields (and those the Connection field names) are dropped here,
// once, so the relay copies the rest as they are.

/** Heads larger than this are refused (node's client default is 16 KiB; upstreams set long cookies). */
export const MAX_RESPONSE_HEAD = 64 * 1024;

/** How the response body is delimited on the wire. */
export type BodyFraming = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseHead {
  status: number;
  /** The reason phrase ('' when absent). */
  reason: string;
  /** The end-to-end fields as received, flat: [name, value, name, value, ...]. */
  headers: string[];
  /** 'length' uses contentLength; 'none' only for 1xx (bodyless responses are decided by the exchange). */
  framing: BodyFraming;
  contentLength: number;
  /** The upstream closes the connection after this response (Connection: close, or HTTP/1.0 without keep-alive); a body framed by the close ends it too. */
  close: boolean;
  /** Bytes of the head, final CRLF CRLF included. */
  size: number;
}

/** A malformed response head; the code is one upstreamReason() counts as `protocol`. */
export class ResponseHeadError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`upstream response head: ${message}`);
  }
}

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const BAD_VALUE_CHAR = /[\x00-\x08\x0a-\x1f\x7f]/;
const DIGITS = /^\d{1,15}$/;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection']);
const CRLFCRLF = Buffer.from('\r\n\r\n');

function fail(code: string, message: string): never {
  throw new ResponseHeadError(code, message);
}

/** Throw on a bare LF (one not preceded by CR) in buf[from, to). */
function checkLineEnds(buf: Buffer, from: number, to: number): void {
  let i = buf.indexOf(10, from);
  while (i !== -1 && i < to) {
    if (i === 0 || buf[i - 1] !== 13) fail('HPE_LF_EXPECTED', 'bare LF');
    i = buf.indexOf(10, i + 1);
  }
}

function listTokens(value: string, into: string[]): void {
  // The usual single values without the split.
  const lower = value.toLowerCase();
  if (lower === 'keep-alive' || lower === 'close' || lower === 'chunked') {
    into.push(lower);
    return;
  }
  for (const t of value.split(',')) {
    const s = t.trim().toLowerCase();
    if (s) into.push(s);
  }
}

/**
 * Parse the head at the start of `buf`, or return undefined if it is not
 * complete yet. Throws ResponseHeadError when it is malformed or longer than
 * `limit` (then without waiting for the rest).
 */
export function parseResponseHead(buf: Buffer, limit = MAX_RESPONSE_HEAD): ResponseHead | undefined {
  const end = buf.indexOf(CRLFCRLF);
  if (end === -1) {
    if (buf.length > limit) fail('HPE_HEADER_OVERFLOW', 'too large');
    checkLineEnds(buf, 0, buf.length);
    return undefined;
  }
  if (end + 4 > limit) fail('HPE_HEADER_OVERFLOW', 'too large');
  checkLineEnds(buf, 0, end);
  const text = buf.toString('latin1', 0, end);
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd === -1) lineEnd = text.length;
  const statusLine = text.slice(0, lineEnd);
  if (statusLine.includes('\r')) fail('HPE_CR_EXPECTED', 'bare CR');
  const m = STATUS_LINE.exec(statusLine);
  if (!m) fail(statusLine.startsWith('HTTP/') ? 'HPE_INVALID_VERSION' : 'HPE_INVALID_CONSTANT', 'bad status line');
  const http10 = m[1] === '0';
  const status = Number(m[2]);
  const headers: string[] = [];
  const connection: string[] = [];
  const codings: string[] = [];
  let lengthValue: string | undefined;
  let lengths = 0;
  let hasTe = false;
  let pos = lineEnd + 2;
  while (pos < text.length) {
    let next = text.indexOf('\r\n', pos);
    if (next === -1) next = text.length;
    const line = text.slice(pos, next);
    pos = next + 2;
    const colon = line.indexOf(':');
    if (colon <= 0) fail('HPE_INVALID_HEADER_TOKEN', line.length > 0 && (line[0] === ' ' || line[0] === '\t') ? 'obs-fold' : 'no field name');
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) fail('HPE_INVALID_HEADER_TOKEN', 'bad field name');
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE_CHAR.test(value)) fail('HPE_INVALID_HEADER_TOKEN', 'control character in a field value');
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      lengths++;
      lengthValue = value;
    } else if (lower === 'transfer-encoding') {
      hasTe = true;
      listTokens(value, codings);
      continue;
    } else if (lower === 'connection') {
      listTokens(value, connection);
      continue;
    } else if (HOP_BY_HOP.has(lower)) {
      continue;
    }
    headers.push(name, value);
  }
  let framing: BodyFraming;
  let contentLength = -1;
  if (hasTe) {
    if (lengths > 0) fail('HPE_UNEXPECTED_CONTENT_LENGTH', 'Content-Length with Transfer-Encoding');
    // A final coding other than chunked: the body runs to the close (RFC 9112 §6.3).
    framing = codings[codings.length - 1] === 'chunked' ? 'chunked' : 'close';
    if (http10) framing = 'close';
  } else if (lengths > 0) {
    if (lengths > 1) fail('HPE_UNEXPECTED_CONTENT_LENGTH', 'more than one Content-Length');
    if (lengthValue === undefined || !DIGITS.test(lengthValue)) fail('HPE_INVALID_CONTENT_LENGTH', 'bad Content-Length');
    framing = 'length';
    contentLength = Number(lengthValue);
  } else {
    framing = 'close';
  }
  if (status < 200) framing = 'none';
  const close = connection.includes('close') || (http10 && !connection.includes('keep-alive'));
  // Fields the Connection header names are hop-by-hop too (RFC 9110 §7.6.1);
  // Content-Length is not: it frames what we relay.
  const named = connection.filter((t) => t !== 'close' && t !== 'keep-alive' && t !== 'content-length');
  const kept = named.length === 0 ? headers : dropNamed(headers, named);
  return { status, reason: m[3] ?? '', headers: kept, framing, contentLength, close, size: end + 4 };
}

function dropNamed(headers: string[], named: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    if (!named.includes(name.toLowerCase())) out.push(name, headers[i + 1] as string);
  }
  return out;
}
