// The slow-body watch of proxy/fronts/request-body.ts on plain streams, with
// windows of milliseconds: the deadline, the rate after the grace window, and
// the windows in which the upstream pushed back.
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import t from 'tap';
import type { AnyReq, AnyRes } from '../../proxy/fronts/answers.js';
import { watchRequestBody } from '../../proxy/fronts/request-body.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function watch(limits: { requestBodyMs: number; minRequestBodyRate: number; bodyRateWindowMs?: number }) {
  const body = new PassThrough();
  const res = new EventEmitter();
  let slowAt: number | undefined;
  const started = performance.now();
  watchRequestBody(body as unknown as AnyReq, res as unknown as AnyRes, limits, () => (slowAt = performance.now() - started));
  body.resume();
  return { body, res, slow: () => slowAt };
}

t.test('timeouts.requestBody: a body still arriving at the deadline is too slow', async (t) => {
  const w = watch({ requestBodyMs: 60, minRequestBodyRate: 0 });
  const feed = setInterval(() => w.body.write(Buffer.alloc(1000)), 10);
  await sleep(120);
  clearInterval(feed);
  t.ok(w.slow() !== undefined && w.slow()! >= 55, `cut at the deadline (${w.slow()} ms), whatever the rate`);
});

t.test('a body that ends in time, or a response that closes, stops the watch', async (t) => {
  const ended = watch({ requestBodyMs: 40, minRequestBodyRate: 1000, bodyRateWindowMs: 20 });
  ended.body.end(Buffer.alloc(10));
  const closed = watch({ requestBodyMs: 40, minRequestBodyRate: 1000, bodyRateWindowMs: 20 });
  closed.res.emit('close');
  await sleep(100);
  t.equal(ended.slow(), undefined, 'body ended');
  t.equal(closed.slow(), undefined, 'response closed');
});

t.test('limits.minRequestBodyRate: the first window is grace, a slow second one is too slow', async (t) => {
  // 1000 B/s over 100 ms windows = 100 bytes a window; nothing is sent.
  const w = watch({ requestBodyMs: 0, minRequestBodyRate: 1000, bodyRateWindowMs: 100 });
  await sleep(260);
  t.ok(w.slow() !== undefined && w.slow()! >= 195, `cut at the end of the second window, not the first (${w.slow()} ms)`);
});

t.test('a window with enough bytes, or one the upstream pushed back in, is not held against the client', async (t) => {
  const fast = watch({ requestBodyMs: 0, minRequestBodyRate: 1000, bodyRateWindowMs: 100 });
  const feed = setInterval(() => fast.body.write(Buffer.alloc(1000)), 10);
  const pushed = watch({ requestBodyMs: 0, minRequestBodyRate: 1000, bodyRateWindowMs: 100 });
  pushed.body.pause();
  await sleep(350);
  clearInterval(feed);
  t.equal(fast.slow(), undefined, 'at rate');
  t.equal(pushed.slow(), undefined, 'paused by the pipe: no bytes, but not the client’s fault');
  fast.res.emit('close');
  pushed.res.emit('close');
});
