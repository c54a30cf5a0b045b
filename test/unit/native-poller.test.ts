// The native Poller on this host (plain loopback TCP): it watches the socket's own fd in the
// addon's private epoll set, so a poller costs no file descriptor (it used to dup() one per
// poller); it fires on data, on the peer's FIN and RST; stop() silences it; close() is
// idempotent; nothing leaks once the socket is closed after close().
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { native } from '../../native/index.js';
import type { NativeSyscallError, Poller } from '../../native/index.js';

interface Link {
  near: net.Socket;
  far: net.Socket;
  fd: number;
}

/** `near` is never read by Node (the poller watches it), `far` is the peer. */
async function link(t: Test): Promise<Link> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const far = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    far.once('connect', resolve);
    far.once('error', reject);
  });
  const near = await accepted;
  server.close();
  for (const s of [near, far]) s.on('error', () => undefined);
  t.teardown(() => {
    near.destroy();
    far.destroy();
  });
  return { near, far, fd: (near as unknown as { _handle: { fd: number } })._handle.fd };
}

const fds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A started poller that counts its calls and can be awaited; it stops itself on each call
 *  (level-triggered: an unread socket would call again and again). */
function watch(fd: number): { p: Poller; calls(): number; next(): Promise<NativeSyscallError | null> } {
  let calls = 0;
  let waiter: ((e: NativeSyscallError | null) => void) | null = null;
  const p = native().createPoller(fd, (err) => {
    calls++;
    p.stop();
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(err);
    }
  });
  return {
    p,
    calls: () => calls,
    next: () =>
      new Promise((resolve) => {
        waiter = resolve;
      }),
  };
}

t.test('pollers cost no file descriptor', async (t) => {
  const links: Link[] = [];
  for (let i = 0; i < 20; i++) links.push(await link(t));
  native().createPoller(links[0]!.fd, () => undefined).close(); // the hub's one epoll fd exists from here
  const base = fds();
  const pollers = links.map((l) => native().createPoller(l.fd, () => undefined));
  const more = links.map((l) => native().createPoller(l.fd, () => undefined)); // a second poller on each fd
  for (const p of pollers) p.start();
  t.equal(fds(), base, '40 pollers on 20 sockets: 0 extra fds (the dup() technique cost 40)');
  for (const p of [...pollers, ...more]) p.close();
  t.equal(fds(), base);
});

t.test('readable fires on data, on FIN and on RST; stop() silences it; start() resumes', async (t) => {
  const l = await link(t);
  const w = watch(l.fd);
  t.teardown(() => w.p.close());
  let next = w.next();
  w.p.start();
  await sleep(100);
  t.equal(w.calls(), 0, 'nothing to read: no call');
  l.far.write('data');
  t.equal(await next, null, 'data: readable, no error');
  // Stopped (by the callback): more data does not call it.
  l.far.write('more');
  await sleep(150);
  t.equal(w.calls(), 1, 'stopped: silent although the socket is readable');
  next = w.next();
  w.p.start();
  t.equal(await next, null, 'start() again: the pending data calls at once (level-triggered)');
  t.equal(w.calls(), 2);

  const f = await link(t);
  const wf = watch(f.fd);
  t.teardown(() => wf.p.close());
  const fin = wf.next();
  wf.p.start();
  f.far.end();
  t.equal(await fin, null, 'peer FIN wakes it');

  const r = await link(t);
  const wr = watch(r.fd);
  t.teardown(() => wr.p.close());
  const rst = wr.next();
  wr.p.start();
  r.far.resetAndDestroy();
  t.equal(await rst, null, 'peer RST wakes it');
});

t.test('close() is idempotent, stops the calls, and the socket closes cleanly after it', async (t) => {
  const before = fds();
  const l = await link(t);
  const w = watch(l.fd);
  w.p.start();
  w.p.close();
  w.p.close();
  t.throws(() => w.p.start(), { code: 'EBADF', syscall: 'epoll_ctl' }, 'start() after close() is EBADF');
  l.far.write('x');
  await sleep(100);
  t.equal(w.calls(), 0, 'closed: never called');
  l.near.destroy();
  l.far.destroy();
  await sleep(50);
  t.equal(fds(), before, 'both sockets gone, nothing left behind');
});

t.test('many pollers on one fd each get their call; closing one leaves the others armed', async (t) => {
  const l = await link(t);
  const ws = [watch(l.fd), watch(l.fd), watch(l.fd)];
  t.teardown(() => {
    for (const w of ws) w.p.close();
  });
  const nexts = ws.map((w) => w.next());
  for (const w of ws) w.p.start();
  ws[0]!.p.close();
  l.far.write('x');
  const [, r1, r2] = await Promise.all([Promise.race([nexts[0], sleep(200).then(() => 'none')]), nexts[1], nexts[2]]);
  t.same([r1, r2], [null, null], 'the two open ones were called');
  t.equal(ws[0]!.calls(), 0, 'the closed one was not');
});

t.test('a callback that returns true (read until EAGAIN) is called again only on a new event', async (t) => {
  const l = await link(t);
  let calls = 0;
  const p = native().createPoller(l.fd, () => {
    calls++;
    return true; // claims EAGAIN without reading: only a new event may call it again
  });
  t.teardown(() => p.close());
  p.start();
  l.far.write('a');
  await sleep(200);
  // Two at most: switching the registration to edge-triggered re-polls the fd once.
  const settled = calls;
  t.ok(settled >= 1 && settled <= 2, `the unread byte does not keep calling it (${settled} calls in 200 ms)`);
  await sleep(100);
  t.equal(calls, settled, 'quiet while nothing new arrives');
  l.far.write('b');
  await sleep(200);
  t.equal(calls, settled + 1, 'new data is a new event: one call');

  // Returning nothing keeps the level-triggered contract: unread data calls again and again.
  const m = await link(t);
  let levelCalls = 0;
  const q = native().createPoller(m.fd, () => {
    levelCalls++;
    if (levelCalls === 5) q.stop();
  });
  t.teardown(() => q.close());
  q.start();
  m.far.write('x');
  await sleep(200);
  t.equal(levelCalls, 5, 'level-triggered: called until stopped');
  q.start();
  await sleep(100);
  t.ok(levelCalls > 5, 'start() again: still readable, called again');
  q.stop();
});

t.test('the second argument says whether the event reported a hang-up (FIN, RST) beside the data', async (t) => {
  const l = await link(t);
  const seen: Array<boolean | undefined> = [];
  let wake: () => void = () => undefined;
  const buf = Buffer.alloc(64);
  const p = native().createPoller(l.fd, (_err, hangup) => {
    seen.push(hangup);
    // Read what is there (at most one recv), then wait for a new event.
    native().recvPlain(l.fd, buf);
    wake();
    return true;
  });
  t.teardown(() => p.close());
  const next = (): Promise<void> => new Promise((r) => { wake = r; });
  p.start();
  let call = next();
  l.far.write('data only');
  await call;
  t.equal(seen.at(-1), false, 'data alone: no hang-up');
  // Data and FIN both queued before the poller looks: the event carries the hang-up, so a reader knows
  // that a short read did not see everything (the FIN would never wake it again).
  p.stop();
  l.far.end('last words');
  await sleep(100);
  call = next();
  p.start();
  await call;
  t.equal(seen.at(-1), true, 'data + FIN already queued: hang-up reported');
});
