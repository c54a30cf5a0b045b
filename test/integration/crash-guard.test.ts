// The serve command's last resort (proxy/crash-guard.ts, issue 8 item 0): an
// error nobody caught must not end the process (the lab saw Node's own
// ERR_INTERNAL_ASSERTION in TLS over a JS stream kill the sidecar with exit
// 1). It is logged once per distinct error with its stack, counted in
// ktls_sidecar_internal_errors_total{kind}, and the sidecar keeps serving —
// unless errors keep coming (more than 10 within 60 s): then it exits 1 so the
// orchestrator restarts it. The handler module with a fake process and clock,
// then the real CLI in a child process; last, the per-connection guard that
// turns that assertion into a failed write.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { constants } from 'node:os';
import { PassThrough } from 'node:stream';
import tls from 'node:tls';
import t from 'tap';
import { installCrashGuard } from '../../proxy/crash-guard.js';
import { guardJsStreamSocket, guardTlsOverJsStream } from '../../proxy/handshake/js-stream-guard.js';
import { adminRequest, childEnv, followChild } from '../helpers/child-sidecar.js';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { CLI, ROOT } from '../helpers/sidecar.js';

interface Logged {
  level: 'error' | 'fatal';
  obj: Record<string, unknown>;
  msg: string;
}

function rig(opts: { maxErrors?: number; windowMs?: number } = {}) {
  const target = new EventEmitter();
  const logged: Logged[] = [];
  const counted: string[] = [];
  const exits: number[] = [];
  let clock = 0;
  const uninstall = installCrashGuard({
    logger: {
      error: (obj, msg) => logged.push({ level: 'error', obj, msg }),
      fatal: (obj, msg) => logged.push({ level: 'fatal', obj, msg }),
    },
    count: (kind) => counted.push(kind),
    target: target as unknown as NodeJS.Process,
    now: () => clock,
    exit: (code) => exits.push(code),
    ...opts,
  });
  return {
    target, logged, counted, exits, uninstall,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

/** An error thrown from one fixed place (same stack), with per-call message text. */
function assertionLike(conn: number): Error {
  const e = new Error(`This is caused by either a bug in Node.js (conn ${conn})`);
  (e as { code?: string }).code = 'ERR_INTERNAL_ASSERTION';
  return e;
}

t.test('the same error twice: counted twice, logged once with its stack', (t) => {
  const r = rig();
  // Same throw site and call path, different connections in the message.
  for (const conn of [1, 2]) r.target.emit('uncaughtException', assertionLike(conn), 'uncaughtException');
  t.same(r.counted, ['uncaught_exception', 'uncaught_exception']);
  t.equal(r.logged.length, 1, 'one line for one distinct error');
  const l = r.logged[0]!;
  t.equal(l.obj['event'], 'internal_error');
  t.equal(l.obj['kind'], 'uncaught_exception');
  t.match(l.obj['err'], { type: 'Error', code: 'ERR_INTERNAL_ASSERTION' });
  t.match(String((l.obj['err'] as { stack?: string }).stack), /assertionLike/, 'the stack says where');
  t.same(r.exits, [], 'still serving');
  t.end();
});

t.test('distinct errors are logged each; rejections are their own kind; nothing but name/code/message/stack is logged', (t) => {
  const r = rig();
  const withKey = Object.assign(new TypeError('bad state'), { key: Buffer.alloc(32, 7), secret: 'hunter2' });
  r.target.emit('uncaughtException', withKey, 'uncaughtException');
  r.target.emit('unhandledRejection', new RangeError('rejected'), Promise.resolve());
  r.target.emit('uncaughtException', new Error('raised for a rejection'), 'unhandledRejection');
  r.target.emit('uncaughtException', 'a string', 'uncaughtException');
  t.same(r.counted, ['uncaught_exception', 'unhandled_rejection', 'unhandled_rejection', 'uncaught_exception']);
  t.equal(r.logged.length, 4);
  const text = JSON.stringify(r.logged);
  t.notMatch(text, /hunter2|0707070707/, 'properties of the error (key material) never reach the log');
  t.notMatch(text, /a string/, 'a thrown non-Error is named by its type only');
  t.end();
});

t.test('more than maxErrors within the window: fatal line, exit 1, once', (t) => {
  const r = rig({ maxErrors: 10, windowMs: 60_000 });
  for (let i = 0; i < 10; i++) {
    r.target.emit('uncaughtException', assertionLike(i), 'uncaughtException');
    r.advance(1000);
  }
  t.same(r.exits, [], '10 within a minute are survived');
  r.target.emit('uncaughtException', assertionLike(11), 'uncaughtException');
  t.same(r.exits, [1], 'the 11th ends the process');
  t.match(r.logged.at(-1), { level: 'fatal', obj: { event: 'internal_error_limit', errors: 11 } });
  r.target.emit('uncaughtException', assertionLike(12), 'uncaughtException');
  t.same(r.exits, [1], 'exit is asked once');
  t.end();
});

t.test('errors spread wider than the window never add up to an exit', (t) => {
  const r = rig({ maxErrors: 10, windowMs: 60_000 });
  for (let i = 0; i < 50; i++) {
    r.target.emit('uncaughtException', assertionLike(i), 'uncaughtException');
    r.advance(7000);
  }
  t.same(r.exits, []);
  t.equal(r.counted.length, 50);
  t.end();
});

t.test('uninstall removes both handlers', (t) => {
  const r = rig();
  t.equal(r.target.listenerCount('uncaughtException'), 1);
  t.equal(r.target.listenerCount('unhandledRejection'), 1);
  r.uninstall();
  t.equal(r.target.listenerCount('uncaughtException'), 0);
  t.equal(r.target.listenerCount('unhandledRejection'), 0);
  t.end();
});

// ---------------------------------------------------------------------------
// The real CLI: a preload (a data: URL, so no file) makes SIGUSR2 raise one
// uncaught exception and one unhandled rejection in the sidecar process.

const PRELOAD = `data:text/javascript,${encodeURIComponent(
  "process.on('SIGUSR2', () => { setImmediate(() => { throw new Error('crash-guard test: uncaught'); }); Promise.reject(new Error('crash-guard test: rejected')); });",
)}`;

t.test('serve: survives uncaught errors and keeps serving; exits 1 when they keep coming', async (t) => {
  const args = ['--demo', '--listen-host', '127.0.0.1', '--listen-port', '0', '--admin-port', '0'];
  const proc = spawn(process.execPath, ['--import', 'tsx', '--import', PRELOAD, CLI, ...args], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const child = followChild(proc, 15_000);
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const port = await child.startup(30_000);
  const tlsPort = Number(port('tls'));
  const adminPort = Number(port('admin'));

  proc.kill('SIGUSR2');
  await child.waitForLog((l) => l.event === 'internal_error' && l['kind'] === 'uncaught_exception');
  await child.waitForLog((l) => l.event === 'internal_error' && l['kind'] === 'unhandled_rejection');
  const line = child.logs.find((l) => l.event === 'internal_error' && l['kind'] === 'uncaught_exception')!;
  t.match(String((line['err'] as { stack?: string } | undefined)?.stack), /crash-guard test: uncaught/, 'logged with its stack');
  t.equal(proc.exitCode, null, 'the process is still running');
  const res = await request(tlsPort, {});
  t.equal(res.status, 200, 'and still serves TLS');
  const m = (await adminRequest(adminPort, 'GET', '/metrics')).body;
  t.equal(metricValue(m, 'ktls_sidecar_internal_errors_total', { kind: 'uncaught_exception' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_internal_errors_total', { kind: 'unhandled_rejection' }), 1);

  // 2 errors per signal: 5 more signals make 12 within a minute (> 10).
  for (let i = 0; i < 5; i++) {
    proc.kill('SIGUSR2');
    await new Promise((r) => setTimeout(r, 50));
  }
  const code = await child.exited;
  t.equal(code, 1, 'exit 1: the orchestrator restarts a process that keeps failing');
  t.ok(child.logs.some((l) => l.event === 'internal_error_limit' && l.level === 'fatal'), 'the fatal line says why');
  t.equal(child.logs.filter((l) => l.event === 'internal_error').length, 2, 'repeats of the same two errors are not logged again');
});

// ---------------------------------------------------------------------------
// proxy/handshake/js-stream-guard.ts: the per-connection guard for Node's C++
// writers over a JS stream (TLS over the engine's Duplex, HTTP/2 over a
// PlainConnection), whose JSStreamSocket.doWrite asserts on a write during
// its shutdown (nodejs/node#35384). The assertion becomes a failed write.

function assertion(): Error {
  return Object.assign(new Error('This is caused by either a bug in Node.js'), { code: 'ERR_INTERNAL_ASSERTION' });
}

t.test('js stream guard: the assertion becomes EPIPE and is reported; other errors and results pass through', (t) => {
  let next: () => number = () => 0;
  const wrapper = { doWrite: (_req: unknown, _bufs: unknown): number => next() };
  let refused = 0;
  t.equal(guardJsStreamSocket(wrapper, () => refused++), true);
  t.equal(guardJsStreamSocket(wrapper, () => refused++), true, 'guarding twice is harmless');
  t.equal(wrapper.doWrite({}, []), 0, 'a normal write is untouched');
  next = () => {
    throw assertion();
  };
  t.equal(wrapper.doWrite({}, []), -constants.errno.EPIPE, 'the assertion is a failed write (UV_EPIPE)');
  t.equal(refused, 1, 'reported once');
  next = () => {
    throw new TypeError('something else');
  };
  t.throws(() => wrapper.doWrite({}, []), TypeError, 'any other error is not swallowed');
  t.equal(refused, 1);
  t.equal(guardJsStreamSocket({}, () => refused++), false, 'nothing to guard');
  t.end();
});

t.test('js stream guard finds the JS stream under a TLS socket, and under an HTTP/2 session over a Duplex', async (t) => {
  const overDuplex = new tls.TLSSocket(new PassThrough(), { isServer: true });
  t.teardown(() => overDuplex.destroy());
  t.equal(guardTlsOverJsStream(overDuplex, () => undefined), true, 'TLS over a JS Duplex: guarded');
  const wrap = (overDuplex as unknown as { _handle: { _parentWrap: object } })._handle._parentWrap;
  t.ok(Object.prototype.hasOwnProperty.call(wrap, 'doWrite'), 'the wrapper\'s own doWrite shadows the prototype\'s');

  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const onNative = new tls.TLSSocket(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
  t.teardown(() => onNative.destroy());
  t.equal(guardTlsOverJsStream(onNative, () => undefined), false, 'TLS on a native socket: nothing to guard');

  // node:http2 wraps a plain Duplex in a JSStreamSocket; session.socket forwards property writes to it.
  const h2 = http2.createServer();
  const session = await new Promise<http2.ServerHttp2Session>((resolve) => {
    h2.once('session', resolve);
    h2.emit('connection', new PassThrough());
  });
  t.teardown(() => session.destroy());
  t.equal(guardJsStreamSocket(session.socket, () => undefined), true, 'HTTP/2 over a Duplex: guarded through session.socket');
});
