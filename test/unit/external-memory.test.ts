// proxy/upstream/external-memory.ts asks V8 for a scavenge every
// MINOR_GC_EVERY relayed bytes (the bin exposes gc), and does nothing when
// gc is not exposed. Here a spy stands in for the exposed gc.
import t from 'tap';

const calls: unknown[] = [];
(globalThis as { gc?: unknown }).gc = (options: unknown) => calls.push(options);
const { MINOR_GC_EVERY, relayed } = await import('../../proxy/upstream/external-memory.js');

t.test('one minor GC per MINOR_GC_EVERY bytes, summed over chunks of any size', (t) => {
  calls.length = 0;
  const chunk = 64 * 1024;
  for (let sent = 0; sent < 3 * MINOR_GC_EVERY; sent += chunk) relayed(chunk);
  t.same(calls, [{ type: 'minor' }, { type: 'minor' }, { type: 'minor' }]);
  relayed(MINOR_GC_EVERY - 1);
  t.equal(calls.length, 3, 'not before the next MINOR_GC_EVERY bytes');
  relayed(1);
  t.equal(calls.length, 4);
  t.end();
});

t.test('small traffic never asks', (t) => {
  calls.length = 0;
  for (let i = 0; i < 1000; i++) relayed(1024);
  t.equal(calls.length, 0);
  t.end();
});
