// The client's request body on its way to the upstream: whether it needs
// chunked framing there, whether more of it may still arrive, and the two
// bounds on a slow one (each holds an upstream connection otherwise):
// timeouts.requestBody for the whole body and limits.minRequestBodyRate per
// window after the first.
import type http from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { AnyReq, AnyRes } from './answers.js';

/** limits.minRequestBodyRate is measured over windows of this length (the first one is grace). */
export const BODY_RATE_WINDOW_MS = 10_000;

export interface BodyLimits {
  /** timeouts.requestBody: whole request body deadline, ms (0 = none). */
  requestBodyMs: number;
  /** limits.minRequestBodyRate: bytes/s per window after the first (0 = none). */
  minRequestBodyRate: number;
  /** Length of the rate window, ms (default BODY_RATE_WINDOW_MS; tests shorten it). */
  bodyRateWindowMs?: number;
}

/** Whether a request body exists that no Content-Length frames (HTTP/1.1 chunked, HTTP/2 DATA without content-length). */
export function needsChunked(req: AnyReq): boolean {
  if (req.headers['content-length'] !== undefined) return false;
  if (req.httpVersionMajor === 2) return !(req as Http2ServerRequest).stream.endAfterHeaders;
  return req.headers['transfer-encoding'] !== undefined;
}

/** Whether body bytes may still arrive (HTTP/2: no END_STREAM on HEADERS yet; HTTP/1.1: message incomplete). */
export function bodyPending(req: AnyReq): boolean {
  if (req.httpVersionMajor === 2) return !(req as Http2ServerRequest).stream.endAfterHeaders && !req.readableEnded;
  return !(req as http.IncomingMessage).complete;
}

/**
 * timeouts.requestBody and limits.minRequestBodyRate with one timer per
 * body (re-armed at each window end or the deadline), never one per chunk;
 * `tooSlow` runs once when either is missed. A window in which the upstream
 * pushed back (the pipe paused the body) is not held against the client.
 * The watch ends with the body or when `res` closes.
 */
export function watchRequestBody(req: AnyReq, res: AnyRes, limits: BodyLimits, tooSlow: () => void): void {
  const { requestBodyMs, minRequestBodyRate } = limits;
  if (requestBodyMs <= 0 && minRequestBodyRate <= 0) return;
  const windowMs = limits.bodyRateWindowMs ?? BODY_RATE_WINDOW_MS;
  const minBytes = (minRequestBodyRate * windowMs) / 1000;
  const started = performance.now();
  let windowEnd = windowMs;
  let windows = 0;
  let bytes = 0;
  let pushedBack = false;
  let timer: NodeJS.Timeout | undefined;
  const onData = (d: Buffer): void => {
    bytes += d.length;
  };
  const onPause = (): void => {
    pushedBack = true;
  };
  const stop = (): void => {
    clearTimeout(timer);
    req.off('data', onData);
    req.off('pause', onPause);
  };
  const arm = (): void => {
    const deadline = requestBodyMs > 0 ? requestBodyMs : Infinity;
    const at = Math.min(deadline, minRequestBodyRate > 0 ? windowEnd : Infinity);
    timer = setTimeout(tick, Math.max(0, at - (performance.now() - started)));
    timer.unref();
  };
  const tick = (): void => {
    const elapsed = performance.now() - started;
    if (requestBodyMs > 0 && elapsed >= requestBodyMs) {
      stop();
      tooSlow();
      return;
    }
    if (minRequestBodyRate > 0 && elapsed >= windowEnd) {
      windows++;
      // The first window is grace (connection ramp-up, a client's think time).
      if (windows >= 2 && !pushedBack && bytes < minBytes) {
        stop();
        tooSlow();
        return;
      }
      windowEnd += windowMs;
      bytes = 0;
      pushedBack = req.isPaused();
    }
    arm();
  };
  req.on('data', onData);
  req.on('pause', onPause);
  req.once('end', stop);
  res.once('close', stop);
  arm();
}
