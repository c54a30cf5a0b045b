// The JS side of lending a kTLS direction to the splice pump
// (proxy/record-layer/splice.ts), against a scripted pump: TX order (the lend
// starts after the operations queued before it and yields to the ones queued
// during a run), the budget loop with its key usage check, every way a lend
// ends (eof, stop, failures by side, close without callback), and RX's
// record handling between runs (control record, empty read, data, EOF).
// The kernel path itself is tested in the lab (test/kernel/sidecar-tcp-splice).
import t, { type Test } from 'tap';
import type { SplicePump, SpliceResult } from '../../native/index.js';
import { NativeSyscallError } from '../../native/index.js';
import type { KtlsErrorClass } from '../../proxy/ktls/errno.js';
import type { TxOp } from '../../proxy/record-layer/control.js';
import type { Done } from '../../proxy/record-layer/paths.js';
import { RxLend, TX_RUN_BUDGET, TxLend } from '../../proxy/record-layer/splice.js';
import type { RxLendHost, SpliceOutcome, TxLendHost } from '../../proxy/record-layer/splice.js';

/** A pump whose runs the test ends by hand. */
class ScriptedPump implements SplicePump {
  starts: number[] = [];
  stops = 0;
  closed = false;
  running = false;
  movedNow = 0;
  constructor(readonly from: number, readonly to: number, private readonly onDone: (r: SpliceResult) => void) {}
  start(budget: number): void {
    if (this.running || this.closed) throw new Error('start while running or closed');
    this.running = true;
    this.movedNow = 0;
    this.starts.push(budget);
  }
  stop(): void {
    this.stops++;
  }
  moved(): number {
    return this.movedNow;
  }
  close(): void {
    this.closed = true;
    this.running = false;
  }
  /** End the run (asynchronously in the real pump; here the test calls it from its own turn). */
  end(bytes: number, end: SpliceResult['end'], error: NativeSyscallError | null = null): void {
    if (!this.running) throw new Error('no run');
    this.running = false;
    this.movedNow = bytes;
    this.onDone({ bytes, end, error });
  }
}

/** A TX slot queue like the stream's runTx. */
function txQueue(): { runTx: (op: TxOp) => void; log: string[]; busy: () => boolean; onQueued: (fn: () => void) => void } {
  const waiting: TxOp[] = [];
  let busy = false;
  let queued: () => void = () => undefined;
  const log: string[] = [];
  const runTx = (op: TxOp): void => {
    if (busy) {
      waiting.push(op);
      queued();
      return;
    }
    busy = true;
    op((err?: Error | null) => {
      busy = false;
      if (err) log.push(`error:${err.message}`);
      const next = waiting.shift();
      if (next) runTx(next);
    });
  };
  return { runTx, log, busy: () => busy, onQueued: (fn) => (queued = fn) };
}

function txSetup(t: Test, limit?: number) {
  const q = txQueue();
  const pumps: ScriptedPump[] = [];
  const errors: KtlsErrorClass[] = [];
  const ends: SpliceOutcome[] = [];
  let spliced = 0;
  let checks = 0;
  let closed = false;
  const host: TxLendHost = {
    fd: 7,
    events: { syscallError: (e) => errors.push(e) },
    runTx: q.runTx,
    txClosed: () => closed,
    spliced: (n) => (spliced += n),
    betweenRuns: () => checks++,
  };
  const lend = new TxLend(host, (from, to, onDone) => {
    const p = new ScriptedPump(from, to, onDone);
    pumps.push(p);
    return p;
  }, 5, (o) => ends.push(o), limit);
  q.onQueued(() => lend.yieldSlot());
  t.teardown(() => lend.close());
  return { q, lend, pumps, errors, ends, spliced: () => spliced, checks: () => checks, closeTx: () => (closed = true) };
}

/** An op that holds the slot until released by hand. */
function heldOp(q: ReturnType<typeof txQueue>, name: string): { release: () => void } {
  let done: Done | null = null;
  q.runTx((d) => {
    q.log.push(name);
    done = d;
  });
  return { release: () => done?.() };
}

t.test('TX lend: runs after the operations queued before it, pump from → raw fd', (t) => {
  const s = txSetup(t);
  const held = heldOp(s.q, 'write-1');
  s.lend.begin();
  t.equal(s.pumps.length, 0, 'no pump while an earlier operation holds the slot');
  held.release();
  t.equal(s.pumps.length, 1);
  const p = s.pumps[0]!;
  t.same([p.from, p.to], [5, 7], 'upstream fd → kTLS fd');
  t.same(p.starts, [TX_RUN_BUDGET], 'one budgeted run');
  p.movedNow = 1000;
  t.equal(s.lend.live(), 1000, 'live bytes of the running run');
  p.end(TX_RUN_BUDGET, 'budget');
  t.equal(s.spliced(), TX_RUN_BUDGET, 'finished run counted');
  t.equal(s.checks(), 1, 'key usage checked between runs');
  t.same(p.starts, [TX_RUN_BUDGET, TX_RUN_BUDGET], 'next run on the same pump');
  p.end(10, 'eof');
  t.same(s.ends, [{ end: 'eof' }]);
  t.ok(p.closed, 'pump closed at the end');
  t.notOk(s.q.busy(), 'slot released');
  t.equal(s.spliced(), TX_RUN_BUDGET + 10);
  t.end();
});

t.test('TX lend: an operation queued during a run stops it (flushed) and goes out before the next run', (t) => {
  const s = txSetup(t);
  s.lend.begin();
  const p = s.pumps[0]!;
  s.q.runTx((d) => {
    s.q.log.push('close_notify');
    d();
  });
  t.equal(p.stops, 1, 'the run was asked to stop');
  t.same(s.q.log, [], 'the control record waits for the run');
  p.end(300, 'stopped');
  t.same(s.q.log, ['close_notify'], 'control record after the spliced bytes');
  t.same(p.starts.length, 2, 'splicing resumed behind it');
  t.same(s.ends, [], 'a yield is not an end');
  t.equal(s.spliced(), 300);
  t.end();
});

t.test('TX lend: stop() hands TX back, also when queued or when TX closed meanwhile', (t) => {
  const s = txSetup(t);
  s.lend.begin();
  s.lend.stop();
  t.equal(s.pumps[0]!.stops, 1);
  s.pumps[0]!.end(5, 'stopped');
  t.same(s.ends, [{ end: 'stopped' }]);

  const q = txSetup(t);
  const held = heldOp(q.q, 'w');
  q.lend.begin();
  q.lend.stop();
  held.release();
  t.equal(q.pumps.length, 0, 'a lend stopped before its turn never makes a pump');
  t.same(q.ends, [{ end: 'stopped' }]);

  const c = txSetup(t);
  c.closeTx();
  c.lend.begin();
  t.same(c.ends, [{ end: 'stopped' }], 'TX already closed: nothing spliced');
  t.end();
});

t.test('TX lend: failures by side; the kTLS side counted with stage splice_out', (t) => {
  const up = txSetup(t);
  up.lend.begin();
  up.pumps[0]!.end(0, 'error', new NativeSyscallError(104, 'splice_in'));
  const o = up.ends[0];
  t.equal(o?.end, 'failed');
  if (o?.end === 'failed') {
    t.equal(o.side, 'other', 'reading the upstream failed');
    t.equal(o.error.errno, 'ECONNRESET');
  }
  t.same(up.errors, [], 'the other socket is its owner\'s to count');

  const peer = txSetup(t);
  peer.lend.begin();
  peer.pumps[0]!.end(0, 'error', new NativeSyscallError(32, 'splice_out'));
  const p = peer.ends[0];
  t.ok(p?.end === 'failed' && p.side === 'peer', 'writing the client failed');
  t.same(peer.errors, [{ errno: 'EPIPE', kind: 'closed', stage: 'splice_out' }], 'counted once, stage splice_out');

  const made = txQueue();
  const errors: KtlsErrorClass[] = [];
  const ends: SpliceOutcome[] = [];
  const lend = new TxLend({ fd: 1, events: { syscallError: (e) => errors.push(e) }, runTx: made.runTx, txClosed: () => false, spliced: () => undefined, betweenRuns: () => undefined }, () => {
    throw new NativeSyscallError(24, 'pipe2');
  }, 2, (e) => ends.push(e));
  lend.begin();
  t.ok(ends[0]?.end === 'failed' && ends[0].side === 'pump', 'no pipe: a pump failure');
  t.equal(errors[0]?.errno, 'EMFILE');
  t.notOk(made.busy(), 'slot released');
  t.end();
});

t.test('TX lend: close() mid-run counts the bytes moved and calls back nothing', (t) => {
  const s = txSetup(t);
  s.lend.begin();
  const p = s.pumps[0]!;
  p.movedNow = 4096;
  s.lend.close();
  t.ok(p.closed);
  t.equal(s.spliced(), 4096, 'the running run\'s bytes counted');
  t.same(s.ends, []);
  t.equal(s.lend.live(), 0);
  t.end();
});

function rxSetup(t: Test, reads: Array<ReturnType<RxLendHost['readOne']>>) {
  const pumps: ScriptedPump[] = [];
  const ends: SpliceOutcome[] = [];
  const errors: KtlsErrorClass[] = [];
  const log: string[] = [];
  let live = true;
  let spliced = 0;
  const host: RxLendHost = {
    fd: 9,
    events: { syscallError: (e) => errors.push(e) },
    rxLive: () => live,
    spliced: (n) => (spliced += n),
    readOne: () => {
      const r = reads.shift() ?? 'again';
      log.push(`read:${r}`);
      if (r === 'ended') live = false;
      return r;
    },
    rxReturned: () => log.push('returned'),
  };
  let flushCb: (() => void) | null = null;
  const lend = new RxLend(host, (from, to, onDone) => {
    const p = new ScriptedPump(from, to, onDone);
    pumps.push(p);
    return p;
  }, 3, (cb) => {
    log.push('flush');
    flushCb = cb;
  }, (o) => ends.push(o));
  t.teardown(() => lend.close());
  return { lend, pumps, ends, errors, log, flushed: () => flushCb?.(), spliced: () => spliced, endRx: () => (live = false) };
}

const EINVAL = (): NativeSyscallError => new NativeSyscallError(22, 'splice_in');

t.test('RX lend: flush first, then kTLS fd → upstream until EOF', (t) => {
  const s = rxSetup(t, ['ended']);
  s.lend.begin();
  t.same(s.log, ['flush']);
  t.equal(s.pumps.length, 0, 'no pump before the flush is written');
  s.flushed();
  const p = s.pumps[0]!;
  t.same([p.from, p.to, p.starts[0]], [9, 3, 0], 'kTLS fd → upstream fd, no budget');
  p.end(70000, 'eof');
  t.same(s.log, ['flush', 'read:ended'], 'EOF confirmed by reading the record stream');
  t.same(s.ends, [{ end: 'eof' }]);
  t.equal(s.spliced(), 70000);
  t.ok(p.closed);
  t.end();
});

t.test('RX lend: a control record stops a run; read it, then the next run', (t) => {
  const s = rxSetup(t, ['more', 'ended']);
  s.lend.begin();
  s.flushed();
  const p = s.pumps[0]!;
  p.end(100, 'error', EINVAL());
  t.same(s.log, ['flush', 'read:more']);
  t.equal(p.starts.length, 2, 'RX handed back to the pump');
  t.same(s.errors, [], 'a control record is not an error');
  p.end(50, 'error', EINVAL());
  t.same(s.ends, [{ end: 'eof' }], 'close_notify (RX ended) ends the lend');
  t.equal(s.spliced(), 150);
  t.end();
});

t.test('RX lend: a data record read in JS is flushed before the next run', (t) => {
  const s = rxSetup(t, ['data']);
  s.lend.begin();
  s.flushed();
  s.pumps[0]!.end(0, 'eof');
  t.same(s.log, ['flush', 'read:data', 'flush']);
  t.equal(s.pumps[0]!.starts.length, 1, 'waits for that flush');
  s.flushed();
  t.equal(s.pumps[0]!.starts.length, 2);
  t.end();
});

t.test('RX lend: nothing readable after a control-record stop fails; empty reads are bounded', (t) => {
  const s = rxSetup(t, ['again']);
  s.lend.begin();
  s.flushed();
  s.pumps[0]!.end(0, 'error', EINVAL());
  const o = s.ends[0];
  t.ok(o?.end === 'failed' && o.side === 'peer', 'failed on the kTLS side');
  t.equal(s.errors.length, 1, 'counted');

  const e = rxSetup(t, []);
  e.lend.begin();
  e.flushed();
  const p = e.pumps[0]!;
  let runs = 0;
  while (p.running && runs < 100) {
    runs++;
    p.end(0, 'eof');
  }
  t.ok(runs > 1 && runs <= 10, `an empty read restarts, a spinning one stops (${runs} runs)`);
  t.equal(e.ends[0]?.end, 'failed');
  t.end();
});

t.test('RX lend: stop() gives RX back to the stream; failures by side', (t) => {
  const s = rxSetup(t, []);
  s.lend.begin();
  s.flushed();
  s.lend.stop();
  t.equal(s.pumps[0]!.stops, 1);
  s.pumps[0]!.end(8, 'stopped');
  t.same(s.ends, [{ end: 'stopped' }]);
  t.ok(s.log.includes('returned'), 'the stream reads again');

  const f = rxSetup(t, []);
  f.lend.begin();
  f.lend.stop();
  f.flushed();
  t.equal(f.pumps.length, 0, 'stopped during the flush: no run');
  t.same(f.ends, [{ end: 'stopped' }]);

  const up = rxSetup(t, []);
  up.lend.begin();
  up.flushed();
  up.pumps[0]!.end(0, 'error', new NativeSyscallError(32, 'splice_out'));
  t.ok(up.ends[0]?.end === 'failed' && up.ends[0].side === 'other', 'writing the upstream failed');
  t.same(up.errors, [], 'the owner counts the upstream');

  const bad = rxSetup(t, []);
  bad.lend.begin();
  bad.flushed();
  bad.pumps[0]!.end(0, 'error', new NativeSyscallError(74, 'splice_in'));
  t.same(bad.errors, [{ errno: 'EBADMSG', kind: 'decrypt_error', stage: 'splice_in' }]);
  t.end();
});

t.test('TX lend with a limit: runs of min(budget, left), ends done after exactly the limit', (t) => {
  const limit = 2 * TX_RUN_BUDGET + 5;
  const s = txSetup(t, limit);
  s.lend.begin();
  const p = s.pumps[0]!;
  t.same(p.starts, [TX_RUN_BUDGET], 'a full run first');
  p.end(TX_RUN_BUDGET, 'budget');
  t.equal(s.checks(), 1, 'key usage checked between runs');
  p.end(TX_RUN_BUDGET, 'budget');
  t.same(p.starts, [TX_RUN_BUDGET, TX_RUN_BUDGET, 5], 'the last run asks for exactly what is left: nothing past the limit is read');
  t.same(s.ends, [], 'not over before the limit');
  p.end(5, 'budget');
  t.same(s.ends, [{ end: 'done' }], 'done at the limit');
  t.equal(s.spliced(), limit, 'every byte counted');
  t.ok(p.closed, 'pump closed');
  t.notOk(s.q.busy(), 'slot released');

  const small = txSetup(t, 10);
  small.lend.begin();
  t.same(small.pumps[0]!.starts, [10], 'a limit under the run budget is the run');
  // The pump reports EOF when it met the FIN right at the budget: the limit decides.
  small.pumps[0]!.end(10, 'eof');
  t.same(small.ends, [{ end: 'done' }], 'the limit reached is done, whatever ended the run');
  t.end();
});

t.test('TX lend with a limit: a yield mid-way resumes with what is left; EOF before the limit is the other side failing', (t) => {
  const s = txSetup(t, 1000);
  s.lend.begin();
  const p = s.pumps[0]!;
  s.q.runTx((d) => {
    s.q.log.push('key_update');
    d();
  });
  p.end(300, 'stopped');
  t.same(s.q.log, ['key_update'], 'the queued operation went out between runs');
  t.same(p.starts, [1000, 700], 'the next run asks for the rest only');
  p.end(200, 'eof');
  const o = s.ends[0];
  t.equal(o?.end, 'failed', 'EOF 500 bytes short: failed');
  if (o?.end === 'failed') {
    t.equal(o.side, 'other', 'the other socket cut it');
    t.equal(o.error.kind, 'closed');
    t.match(String(o.cause), /500 bytes before/);
  }
  t.same(s.errors, [], 'the other side is its owner\'s to count');
  t.equal(s.spliced(), 500, 'what went out is counted');

  const stopped = txSetup(t, 100);
  stopped.lend.begin();
  stopped.lend.stop();
  stopped.pumps[0]!.end(40, 'stopped');
  t.same(stopped.ends, [{ end: 'stopped' }], 'stop() before the limit: stopped');

  const failed = txSetup(t, 100);
  failed.lend.begin();
  failed.pumps[0]!.end(60, 'error', new NativeSyscallError(104, 'splice_out'));
  t.ok(failed.ends[0]?.end === 'failed' && failed.ends[0].side === 'peer', 'a write error is the client\'s, limit or not');
  t.end();
});

t.test('TX lend: a limit must be a positive safe integer', (t) => {
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 60]) t.throws(() => txSetup(t, bad), RangeError, `limit ${bad}`);
  t.end();
});
