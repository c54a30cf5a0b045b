// The upstream side of http mode as pure parts: the reason each socket error
// is counted under and the answer each reason gets (proxy/fronts/upstream-errors.ts),
// and the admission of requests to the upstream sockets (proxy/upstream/slots.ts).
import { EventEmitter } from 'node:events';
import t from 'tap';
import { UPSTREAM_ERROR_REASONS } from '../../proxy/vocabulary.js';
import { UPSTREAM_ANSWERS, upstreamReason } from '../../proxy/fronts/upstream-errors.js';
import { UpstreamSlots } from '../../proxy/upstream/slots.js';

const err = (code?: string): NodeJS.ErrnoException => Object.assign(new Error('x'), code === undefined ? {} : { code });

t.test('socket errors map to the reason set', (t) => {
  t.equal(upstreamReason(err('ECONNREFUSED')), 'connect_refused');
  t.equal(upstreamReason(err('EHOSTUNREACH')), 'connect_refused');
  t.equal(upstreamReason(err('ENOTFOUND')), 'dns');
  t.equal(upstreamReason(err('EAI_AGAIN')), 'dns');
  t.equal(upstreamReason(err('ECONNRESET')), 'reset');
  t.equal(upstreamReason(err('EPIPE')), 'reset');
  t.equal(upstreamReason(err('HPE_INVALID_STATUS')), 'protocol');
  t.equal(upstreamReason(err('ETIMEDOUT')), 'other');
  t.equal(upstreamReason(err('constructor')), 'other', 'no prototype keys');
  t.equal(upstreamReason(err()), 'other');
  t.end();
});

t.test('every reason has its answer: timeouts 504, our queue 503, the rest 502', (t) => {
  t.same(Object.keys(UPSTREAM_ANSWERS).sort(), [...UPSTREAM_ERROR_REASONS].sort());
  t.equal(UPSTREAM_ANSWERS.connect_timeout.status, 504);
  t.equal(UPSTREAM_ANSWERS.response_timeout.status, 504);
  t.equal(UPSTREAM_ANSWERS.overloaded.status, 503);
  for (const r of ['connect_refused', 'dns', 'reset', 'protocol', 'other'] as const) t.equal(UPSTREAM_ANSWERS[r].status, 502, r);
  t.equal(UPSTREAM_ANSWERS.dns.text, 'upstream is not reachable.');
  t.end();
});

t.test('the pool runs maxSockets at once, queues maxPending in order, refuses the rest', (t) => {
  const pool = new UpstreamSlots(2, 1, 0);
  t.teardown(() => pool.close());
  const ran: number[] = [];
  const refused: number[] = [];
  const responses = [0, 1, 2, 3].map(() => new EventEmitter());
  responses.forEach((res, i) => pool.admit(res, () => ran.push(i), () => refused.push(i)));
  t.same(ran, [0, 1], 'two slots');
  t.same(refused, [3], 'one waits, the next is refused');
  responses[1]?.emit('close');
  t.same(ran, [0, 1, 2], 'a freed slot goes to the waiting request');
  t.end();
});

t.test('a waiting request leaves the queue when its response closes or its wait runs out', async (t) => {
  const pool = new UpstreamSlots(1, 2, 30);
  t.teardown(() => pool.close());
  const ran: string[] = [];
  const refused: string[] = [];
  const [busy, gone, late] = [new EventEmitter(), new EventEmitter(), new EventEmitter()];
  pool.admit(busy, () => ran.push('busy'), () => refused.push('busy'));
  pool.admit(gone, () => ran.push('gone'), () => refused.push('gone'));
  pool.admit(late, () => ran.push('late'), () => refused.push('late'));
  gone.emit('close');
  await new Promise((r) => setTimeout(r, 60));
  t.same(refused, ['late'], 'the wait is bounded');
  busy.emit('close');
  t.same(ran, ['busy'], 'neither the closed nor the refused one runs later');
});
