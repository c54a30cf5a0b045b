// What the HTTP fronts send when a request is not forwarded whole: a short
// plain-text error answer, a response cut once its head is out, and the
// graceful end of a connection (close_notify + FIN before the stream goes).
import type http from 'node:http';
import http2 from 'node:http2';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import { markClose } from '../plaintext-socket.js';

/** A request or response of either client protocol (node:http2's compat API mirrors node:http). */
export type AnyReq = http.IncomingMessage | Http2ServerRequest;
export type AnyRes = http.ServerResponse | Http2ServerResponse;

export function isH2(res: AnyRes): res is Http2ServerResponse {
  return 'stream' in res;
}

/**
 * Cut a response whose head is out, so the client sees it incomplete at once:
 * HTTP/2 resets the stream with `code`, HTTP/1.1 closes the connection
 * (no final chunk, or fewer bytes than Content-Length).
 */
export function cutResponse(res: AnyRes, code: number, closeReason?: 'upstream_error'): void {
  if (isH2(res)) {
    if (!res.stream.destroyed) res.stream.close(code);
    return;
  }
  if (closeReason) markClose(res.socket, closeReason);
  res.destroy();
}

/** A short plain-text error answer; `sent` runs once it is handed to the connection. */
export function sendError(res: AnyRes, status: number, text: string, sent?: () => void): void {
  if (res.headersSent) {
    // Too late for a status: cut the response so the client sees it incomplete.
    cutResponse(res, http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const body = `${text}\n`;
  const headers = { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) };
  // One call per class: @types/node 24's writeHead overloads of the two do not unify.
  if (isH2(res)) res.writeHead(status, headers);
  else res.writeHead(status, headers);
  res.end(body, sent);
}

/** End our side (close_notify + FIN on TLS), then release the stream once the write side is done. */
export function endGracefully(conn: Duplex): void {
  if (conn.destroyed) return;
  const soon = (conn as Duplex & { destroySoon?: () => void }).destroySoon;
  if (typeof soon === 'function') {
    soon.call(conn);
    return;
  }
  if (conn.writable) conn.end();
  if (conn.writableFinished) conn.destroy();
  else conn.once('finish', () => conn.destroy());
}
