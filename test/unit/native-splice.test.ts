// The native splice pump on this host (plain loopback TCP, no kTLS needed): bytes move
// socket -> pipe -> socket in the kernel, exact (sha256) for every size, with and without a
// budget; backpressure waits instead of spinning; stop/close/RST end as documented; a pump
// holds a pipe (2 fds) only while bytes are in flight (an idle one, even with a run waiting
// for bytes, costs no fd), and leaks nothing.
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { NativeSyscallError, defaultAddonPath, native } from '../../native/index.js';
import type { SplicePump, SpliceResult } from '../../native/index.js';
import { classifyKtlsError } from '../../proxy/ktls/errno.js';
import { hashReads } from '../helpers/hash-reader.js';


/** One loopback connection: `near` is never read by Node (the pump's side), `far` is Node's. */
interface Link {
  near: net.Socket;
  far: net.Socket;
  fd: number;
}

async function link(t: Test): Promise<Link> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const far = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    far.once('connect', resolve);
    far.once('error', reject);
  });
  const near = await accepted;
  server.close();
  for (const s of [near, far]) s.on('error', () => undefined);
  const fd = (near as unknown as { _handle: { fd: number } })._handle.fd;
  t.teardown(() => {
    near.destroy();
    far.destroy();
  });
  return { near, far, fd };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A pump whose runs can be awaited; also records every onDone, to catch a second call. */
function pump(from: number, to: number): { p: SplicePump; done: () => Promise<SpliceResult>; results: SpliceResult[] } {
  const results: SpliceResult[] = [];
  let waiter: ((r: SpliceResult) => void) | null = null;
  const p = native().createSplicePump(from, to, (r) => {
    results.push(r);
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(r);
    }
  });
  return {
    p,
    results,
    done: () =>
      new Promise((resolve) => {
        waiter = resolve;
      }),
  };
}

/** Open fds of this process, minus the pump's idle pipe pool (2 fds per idle pipe). */
function ownFds(): number {
  return readdirSync('/proc/self/fd').length - 2 * native().splicePipesIdle();
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once p.moved() stopped changing for `quietMs` (the pump waits on backpressure). */
async function stalled(p: SplicePump, quietMs = 250): Promise<number> {
  let last = -1;
  for (;;) {
    const m = p.moved();
    if (m === last && m > 0) return m;
    last = m;
    await sleep(quietMs);
  }
}

/** Bytes Node reads from a socket it had never read (the rest the pump left there). */
function readRest(sock: net.Socket, want: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let n = 0;
    const onData = (d: Buffer): void => {
      parts.push(d);
      n += d.length;
      if (n >= want) {
        sock.off('data', onData);
        sock.pause();
        resolve(Buffer.concat(parts));
      }
    };
    sock.on('data', onData);
    sock.resume();
  });
}

const SIZES = [0, 1, 64 * 1024 - 1, 64 * 1024, 1024 * 1024 + 7, 64 * 1024 * 1024];

for (const size of SIZES) {
  t.test(`${size} B until EOF: every byte arrives, sha256 equal, end 'eof'`, async (t) => {
    const a = await link(t);
    const b = await link(t);
    const data = randomBytes(size);
    const got = hashReads(b.far);
    const { p, done, results } = pump(a.fd, b.fd);
    t.teardown(() => p.close());
    const finished = done();
    p.start(0);
    t.equal(results.length, 0, 'onDone not inside start()');
    a.far.end(data);
    const r = await finished;
    t.same({ bytes: r.bytes, end: r.end, error: r.error }, { bytes: size, end: 'eof', error: null });
    await got.until(size);
    t.equal(got.bytes(), size);
    t.equal(got.digest(), sha(data), 'sha256');
    t.equal(p.moved(), size, 'moved() reads the last run');
    await sleep(20);
    t.equal(results.length, 1, 'onDone exactly once');
  });
}

t.test('a budget never reads past itself: the rest stays in the socket for Node', async (t) => {
  const cases: Array<[number, number]> = [
    [10, 1],
    [64 * 1024, 64 * 1024 - 1],
    [1024 * 1024 + 7, 65536],
    [1024 * 1024 + 7, 1024 * 1024 + 6],
    [4 * 1024 * 1024, 3 * 1024 * 1024 + 1],
  ];
  for (const [avail, budget] of cases) {
    const a = await link(t);
    const b = await link(t);
    const data = randomBytes(avail);
    const got = hashReads(b.far);
    const { p, done } = pump(a.fd, b.fd);
    const finished = done();
    p.start(budget);
    a.far.write(data); // no FIN: the pump must stop at the budget, not at EOF
    const r = await finished;
    t.same({ bytes: r.bytes, end: r.end, error: r.error }, { bytes: budget, end: 'budget', error: null }, `${budget} of ${avail}`);
    await got.until(budget);
    t.equal(got.digest(), sha(data.subarray(0, budget)), 'the budget arrived, exact');
    p.close();
    const rest = await readRest(a.near, avail - budget);
    t.equal(sha(rest), sha(data.subarray(budget)), `the other ${avail - budget} B are still readable by Node`);
  }
});

t.test('a budget exactly what arrives, and a budget beyond EOF', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const data = randomBytes(100_000);
  const got = hashReads(b.far);
  const { p, done } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  let finished = done();
  p.start(40_000);
  a.far.write(data.subarray(0, 40_000));
  t.match(await finished, { bytes: 40_000, end: 'budget' });
  finished = done();
  p.start(1_000_000); // more than will ever come: EOF ends it
  a.far.end(data.subarray(40_000));
  t.match(await finished, { bytes: 60_000, end: 'eof', error: null });
  await got.until(100_000);
  t.equal(got.digest(), sha(data));
});

t.test('backpressure: a stalled reader on `to` makes the pump wait, not spin', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const size = 32 * 1024 * 1024;
  const data = randomBytes(size);
  b.far.pause(); // nobody reads `to`: its send buffer and the peer's receive buffer fill up
  const { p, done } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  const finished = done();
  p.start(0);
  a.far.end(data);
  const at = await stalled(p);
  t.ok(at < size, `stalled at ${at} of ${size} B`);
  // Bound: with nothing readable and nothing writable the process sleeps in epoll_wait; only
  // timers (tap, this test) run. A pump that re-armed a ready fd without progress would burn
  // the whole second on one core. 150 ms leaves room for GC and a loaded CI host.
  const before = process.cpuUsage();
  await sleep(1000);
  const used = process.cpuUsage(before);
  const ms = (used.user + used.system) / 1000;
  t.ok(ms < 150, `process CPU during a 1 s stall: ${ms.toFixed(1)} ms`);
  t.equal(p.moved(), at, 'nothing moved while stalled');
  const got = hashReads(b.far);
  b.far.resume();
  const r = await finished;
  t.match(r, { bytes: size, end: 'eof', error: null });
  await got.until(size);
  t.equal(got.digest(), sha(data), 'sha256 after the stall');
});

t.test('stop() mid-run: the pipe is flushed, end "stopped", the rest stays in `from`', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const size = 16 * 1024 * 1024;
  const data = randomBytes(size);
  b.far.pause();
  const { p, done, results } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  const finished = done();
  p.start(0);
  a.far.write(data); // no FIN
  await stalled(p);
  p.stop();
  p.stop(); // no-op: still one onDone
  const got = hashReads(b.far);
  b.far.resume();
  const r = await finished;
  t.equal(r.end, 'stopped');
  t.equal(r.error, null);
  await got.until(r.bytes);
  await sleep(50);
  t.equal(got.bytes(), r.bytes, 'exactly the bytes the pump counted reached `to`');
  const rest = await readRest(a.near, size - r.bytes);
  t.equal(createHash('sha256').update(data.subarray(0, r.bytes)).digest('hex'), got.digest(), 'the flushed part is the head of the stream');
  t.equal(sha(rest), sha(data.subarray(r.bytes)), 'nothing lost or duplicated: the rest is readable in order');
  t.equal(results.length, 1, 'one onDone');
  p.stop(); // without a run: no-op
  await sleep(20);
  t.equal(results.length, 1);
});

t.test('stop() with nothing in flight ends on the event loop, not inside stop()', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const { p, done, results } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  const finished = done();
  p.start(0);
  p.stop();
  t.equal(results.length, 0, 'not synchronous');
  t.match(await finished, { bytes: 0, end: 'stopped', error: null });
  // The pump is reusable after a run.
  const again = done();
  p.start(3);
  a.far.write('abcdef');
  t.match(await again, { bytes: 3, end: 'budget' });
});

t.test('one run at a time; a closed pump refuses; bad arguments are TypeErrors', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const n = native();
  const { p, results } = pump(a.fd, b.fd);
  p.start(0);
  t.throws(() => p.start(0), /already active/);
  p.close();
  p.close(); // idempotent
  t.throws(() => p.start(0), /closed/);
  t.throws(() => p.start(-1), /closed/);
  const q = pump(a.fd, b.fd).p;
  t.throws(() => q.start(-1), TypeError);
  t.throws(() => q.start(1.5), TypeError);
  t.throws(() => (q.start as (x: unknown) => void)('5'), TypeError);
  q.close();
  t.throws(() => n.createSplicePump(-1, b.fd, () => undefined), TypeError);
  t.throws(() => (n.createSplicePump as (a: number, b: number, c: unknown) => void)(a.fd, b.fd, null), TypeError);
  await sleep(50);
  t.equal(results.length, 0, 'close() during a run: no callback');
});

t.test('close() mid-run: no callback, the pipe and registrations are released', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const base = ownFds();
  b.far.pause();
  const { p, results } = pump(a.fd, b.fd);
  t.equal(ownFds(), base, 'an open pump costs no fd');
  p.start(0);
  a.far.write(randomBytes(8 * 1024 * 1024));
  await stalled(p);
  t.equal(ownFds(), base + 2, 'a run with bytes in flight holds one pipe, 2 fds');
  p.close();
  await sleep(100);
  t.equal(results.length, 0, 'no onDone after close()');
  t.equal(ownFds(), base, 'fds back to baseline');
  // The sockets still work for Node after the pump let go of them.
  const got = hashReads(b.far);
  b.far.resume();
  await got.until(p.moved());
  await sleep(50);
  t.equal(got.bytes(), p.moved(), 'exactly what the pump had written to `to` reached its reader');
});

t.test('peer RST on `from`: end "error", splice_in, classified closed', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const got = hashReads(b.far);
  const { p, done } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  const finished = done();
  p.start(0);
  a.far.write('before the reset');
  await got.until(16);
  a.far.resetAndDestroy();
  const r = await finished;
  t.equal(r.end, 'error');
  t.equal(r.bytes, 16, 'the bytes before the reset were delivered');
  t.ok(r.error instanceof NativeSyscallError, 'a NativeSyscallError');
  t.match(r.error, { syscall: 'splice_in', code: 'ECONNRESET' });
  t.equal(classifyKtlsError(r.error, 'splice_in').kind, 'closed');
});

t.test('peer RST on `to`: end "error", splice_out, classified closed', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const { p, done } = pump(a.fd, b.fd);
  t.teardown(() => p.close());
  const finished = done();
  b.far.resetAndDestroy();
  await sleep(50); // the RST reaches `to`
  p.start(0);
  a.far.write(randomBytes(256 * 1024));
  const r = await finished;
  t.equal(r.end, 'error');
  t.ok(r.error instanceof NativeSyscallError, 'a NativeSyscallError');
  t.equal(r.error?.syscall, 'splice_out');
  t.ok(['ECONNRESET', 'EPIPE'].includes(r.error?.code ?? ''), `errno ${r.error?.code}`);
  t.equal(classifyKtlsError(r.error, 'splice_out').kind, 'closed');
});

t.test('two pumps in opposite directions over the same two sockets, and a poller beside them', async (t) => {
  // tcp mode: client -> upstream and upstream -> client at once; each fd is `from` of one
  // pump and `to` of the other, in the same epoll set.
  const a = await link(t);
  const b = await link(t);
  const up = randomBytes(8 * 1024 * 1024 + 3);
  const down = randomBytes(16 * 1024 * 1024 + 5);
  const gotB = hashReads(b.far);
  const gotA = hashReads(a.far);
  const ab = pump(a.fd, b.fd);
  const ba = pump(b.fd, a.fd);
  let polled = 0;
  const poller = native().createPoller(a.fd, () => {
    polled++;
    poller.stop();
  });
  t.teardown(() => {
    ab.p.close();
    ba.p.close();
    poller.close();
  });
  const d1 = ab.done();
  const d2 = ba.done();
  ab.p.start(0);
  ba.p.start(0);
  poller.start();
  a.far.end(up);
  b.far.end(down);
  t.match(await d1, { bytes: up.length, end: 'eof' });
  t.match(await d2, { bytes: down.length, end: 'eof' });
  await gotB.until(up.length);
  await gotA.until(down.length);
  t.equal(gotB.digest(), sha(up), 'a -> b exact');
  t.equal(gotA.digest(), sha(down), 'b -> a exact');
  t.ok(polled >= 1, 'the poller on a shared fd was woken too');
});

t.test('an exception in onDone reaches uncaughtException, not a crash', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const seen = new Promise<unknown>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (err) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(err);
    });
  });
  const p = native().createSplicePump(a.fd, b.fd, () => {
    p.close();
    throw new Error('boom from onDone');
  });
  p.start(1);
  a.far.write('x');
  t.match(await seen, { message: 'boom from onDone' });
});

t.test('fds: an idle pump costs none, 1 000 pumps opened and closed leak none, the pool is bounded', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const n = native();
  n.createSplicePump(a.fd, b.fd, () => undefined).close(); // the hub exists (its epoll fd is counted from here)
  const base = ownFds();
  const open: SplicePump[] = [];
  for (let i = 0; i < 10; i++) open.push(n.createSplicePump(a.fd, b.fd, () => undefined));
  t.equal(ownFds(), base, '10 open pumps: no fd');
  for (const p of open) p.start(0);
  await sleep(50); // their first steps ran: `from` is empty, each waits for it
  t.equal(ownFds(), base, '10 pumps with a run waiting for bytes: no fd');
  for (const p of open) p.close();
  t.equal(ownFds(), base, 'closed: still none');
  for (let i = 0; i < 1000; i++) n.createSplicePump(a.fd, b.fd, () => undefined).close();
  t.equal(ownFds(), base, '1 000 sequential pumps: no leak');
  // 100 pumps that all hold bytes at once (`to` is not read: each keeps its pipe), then all
  // drain: 100 empty pipes come back, the pool keeps 64, the rest are closed.
  b.far.pause();
  const many: SplicePump[] = [];
  for (let i = 0; i < 100; i++) many.push(n.createSplicePump(a.fd, b.fd, () => undefined));
  for (const p of many) p.start(0);
  a.far.write(randomBytes(32 * 1024 * 1024));
  await sleep(300);
  while (many.some((p) => p.moved() === 0) && a.far.writableLength > 0) await sleep(100);
  const holding = ownFds() - base;
  t.ok(holding >= 2 * 50 && holding <= 200, `pumps stalled with bytes hold their pipes (${holding / 2} pipes)`);
  const drain = hashReads(b.far);
  b.far.resume();
  await drain.until(32 * 1024 * 1024); // (order across 100 pumps is not the point here)
  await sleep(100);
  t.equal(ownFds(), base, 'every byte arrived, every pipe back once empty: no run holds one');
  t.equal(n.splicePipesIdle(), 64, 'at most 64 empty pipes kept');
  t.ok(readdirSync('/proc/self/fd').length <= base + 128 + 1, 'the pool costs at most 128 fds');
  for (const p of many) p.close();
  t.equal(ownFds(), base, 'closed: no leak');
});

t.test('an idle spliced pair (a pump each way, runs open) holds its two sockets only; bytes stay exact', async (t) => {
  const a = await link(t);
  const b = await link(t);
  const n = native();
  n.createSplicePump(a.fd, b.fd, () => undefined).close();
  const base = ownFds(); // the sockets of both links, the hub
  const gotB = hashReads(b.far);
  const gotA = hashReads(a.far);
  const ab = pump(a.fd, b.fd);
  const ba = pump(b.fd, a.fd);
  t.teardown(() => {
    ab.p.close();
    ba.p.close();
  });
  const d1 = ab.done();
  const d2 = ba.done();
  ab.p.start(0);
  ba.p.start(0);
  const hUp = createHash('sha256');
  const hDown = createHash('sha256');
  let up = 0;
  let down = 0;
  for (const size of [1, 100_000, 3 * 1024 * 1024 + 1]) {
    const u = randomBytes(size);
    const d = randomBytes(size + 7);
    hUp.update(u);
    hDown.update(d);
    up += u.length;
    down += d.length;
    a.far.write(u);
    b.far.write(d);
    await gotB.until(up);
    await gotA.until(down);
    await sleep(50);
    t.equal(ownFds(), base, `idle after ${size} B each way: no pipe held (runs still open)`);
    t.ok(n.splicePipesIdle() <= 64, 'the pool within its bound');
  }
  t.same(results(ab.results, ba.results), [0, 0], 'both runs still open');
  a.far.end();
  b.far.end();
  t.match(await d1, { bytes: up, end: 'eof' });
  t.match(await d2, { bytes: down, end: 'eof' });
  t.equal(gotB.digest(), hUp.digest('hex'), 'a -> b exact');
  t.equal(gotA.digest(), hDown.digest('hex'), 'b -> a exact');
  t.equal(ownFds(), base, 'ended: nothing held');
});

const results = (...lists: SpliceResult[][]): number[] => lists.map((l) => l.length);

t.test('a pump in use moves bytes through a reused (pooled) pipe without leftovers', async (t) => {
  const n = native();
  for (let i = 0; i < 3; i++) {
    const a = await link(t);
    const b = await link(t);
    const data = randomBytes(300_000 + i);
    const got = hashReads(b.far);
    const { p, done } = pump(a.fd, b.fd);
    const finished = done();
    p.start(0);
    a.far.end(data);
    t.match(await finished, { bytes: data.length, end: 'eof' });
    p.close();
    await got.until(data.length);
    await sleep(20);
    t.equal(got.bytes(), data.length, 'no stray bytes from an earlier user of the pipe');
    t.equal(got.digest(), sha(data));
  }
  t.ok(n.splicePipesIdle() >= 1, 'the pipe went back to the pool');
});

t.test('an idle pump or parked poller does not keep the process alive; an armed one does', (t) => {
  const script = (arm: boolean): string => `
    const net = require('node:net');
    const n = require(${JSON.stringify(defaultAddonPath())});
    const server = net.createServer({ pauseOnConnect: true });
    server.listen(0, '127.0.0.1', () => {
      const c = net.connect(server.address().port, '127.0.0.1');
      server.once('connection', (s) => {
        server.close();
        const fd = s._handle.fd;
        const p = n.createSplicePump(fd, c._handle.fd, () => {});
        const q = n.createPoller(fd, () => {});
        q.start(); q.stop();
        if (${arm}) q.start();
        c.unref(); s.unref();
        setTimeout(() => { console.log('alive'); process.exit(0); }, 500).unref();
      });
    });`;
  const idle = spawnSync(process.execPath, ['-e', script(false)], { encoding: 'utf8', timeout: 10_000 });
  t.equal(idle.status, 0, idle.stderr);
  t.equal(idle.stdout, '', 'exited by itself: nothing kept the loop alive');
  const armed = spawnSync(process.execPath, ['-e', script(true)], { encoding: 'utf8', timeout: 10_000 });
  t.equal(armed.stdout.trim(), 'alive', 'a started poller keeps the loop alive');
  t.end();
});

t.test('worker threads: an env torn down with an armed pump and poller exits cleanly, every pipe freed', (t) => {
  // The hub's handles must be closed before the worker's environment (and the addon loaded in
  // it) goes away, and no callback may run into a dying environment: both crashed before.
  const script = `
    const { Worker } = require('node:worker_threads');
    const code = (arm) => \`
      const n = require(${JSON.stringify(defaultAddonPath())});
      const net = require('node:net');
      const server = net.createServer({ pauseOnConnect: true }).listen(0, '127.0.0.1', () => {
        const port = server.address().port;
        const conns = [];
        server.on('connection', (s) => {
          conns.push(s);
          if (conns.length < 2) return;
          server.close();
          const [from, to] = conns;
          const p = n.createSplicePump(from._handle.fd, to._handle.fd, () => {});
          const q = n.createPoller(from._handle.fd, () => {});
          if (\${arm}) {
            q.start(); p.start(0);
            setInterval(() => c1.write('x'), 1);
            setTimeout(() => process.exit(0), 100);
          } else { p.close(); q.close(); for (const c of [c1, c2, from, to]) c.destroy(); }
        });
        const c1 = net.connect(port, '127.0.0.1', () => { c2 = net.connect(port, '127.0.0.1'); c2.resume(); });
        let c2;
      });\`;
    const fs = require('node:fs');
    const pipes = () => fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).startsWith('pipe:'); } catch { return false; } }).length;
    const before = pipes();
    let left = 0;
    for (const arm of [false, true, true, false, true]) {
      left++;
      new Worker(code(arm), { eval: true }).on('exit', (c) => {
        if (c !== 0) console.log('worker exit ' + c);
        if (--left === 0) setTimeout(() => console.log('all workers done, pipes left ' + (pipes() - before)), 50);
      });
    }`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.signal, null, 'no crash');
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), 'all workers done, pipes left 0', 'every pump pipe and pooled pipe closed with its env');
  t.end();
});

t.test('a pump bouncing single bytes does not hold the event loop (per-wakeup cap on reads)', async (t) => {
  // from and to are the two ends of one connection: every byte written comes straight back,
  // so the pump always has exactly one byte to move. Timers must still run.
  const l = await link(t);
  const farFd = (l.far as unknown as { _handle: { fd: number } })._handle.fd;
  l.far.pause();
  const p = native().createSplicePump(l.fd, farFd, () => undefined);
  t.teardown(() => p.close());
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  p.start(0);
  l.far.write('x');
  await sleep(500);
  clearInterval(timer);
  const moved = p.moved();
  p.close();
  t.ok(moved > 1000, `the byte bounced ${moved} times`);
  t.ok(ticks >= 20, `a 10 ms interval still ran ${ticks} times in 500 ms`);
});
