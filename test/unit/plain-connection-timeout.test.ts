// PlainConnection#setTimeout keeps one timer per connection (node:http calls
// it twice per request): a disabled timeout never fires, a re-enabled one
// counts from the call, and a new length takes effect.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { PlainConnection } from '../../proxy/connection/plain-connection.js';

const facts = { remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function conn(): { c: PlainConnection; fired: () => number } {
  const c = new PlainConnection(new PassThrough(), facts);
  let n = 0;
  c.on('timeout', () => n++);
  return { c, fired: () => n };
}

t.test('fires after the idle time, once', async (t) => {
  const { c, fired } = conn();
  c.setTimeout(40);
  await sleep(120);
  t.equal(fired(), 1);
  t.equal(c.closeReason, 'idle_timeout');
  c.destroy();
});

t.test('disabled (0) while a request runs: never fires, even past the old deadline', async (t) => {
  const { c, fired } = conn();
  c.setTimeout(40);
  c.setTimeout(0);
  await sleep(120);
  t.equal(fired(), 0);
  t.equal(c.closeReason, undefined);
  c.destroy();
});

t.test('re-enabled with the same length: counts from the call (also after the disabled timer ran out)', async (t) => {
  const { c, fired } = conn();
  c.setTimeout(40);
  c.setTimeout(0);
  await sleep(80);
  c.setTimeout(40);
  await sleep(20);
  t.equal(fired(), 0, 'not yet: the full length runs from the re-enable');
  await sleep(80);
  t.equal(fired(), 1);
  c.destroy();
});

t.test('a new length replaces the old one', async (t) => {
  const { c, fired } = conn();
  c.setTimeout(300);
  c.setTimeout(30);
  await sleep(100);
  t.equal(fired(), 1);
  c.destroy();
});

t.test('traffic pushes the deadline back', async (t) => {
  const inner = new PassThrough();
  const c = new PlainConnection(inner, facts);
  let n = 0;
  c.on('timeout', () => n++);
  c.on('data', () => undefined);
  c.setTimeout(60);
  for (let i = 0; i < 4; i++) {
    await sleep(30);
    inner.write('x');
  }
  t.equal(n, 0);
  c.destroy();
});
