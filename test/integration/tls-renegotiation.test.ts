// Client-initiated TLS 1.2 renegotiation is refused (OpenSSL's
// SSL_OP_NO_RENEGOTIATION on every context: a no_renegotiation warning alert).
// Node's server would otherwise accept 3 per connection, and kTLS cannot follow
// one anyway. The refused client gives up on the connection (OpenSSL clients
// treat the alert as fatal mid-handshake); the sidecar must close it cleanly
// and go on serving.
import { spawn } from 'node:child_process';
import tls from 'node:tls';
import t from 'tap';
import { handshake, request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { type LogLine, startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());
const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url]);
t.teardown(() => sc.stop());

const REQUEST = 'GET / HTTP/1.1\r\nhost: localhost\r\n\r\n';

/** Resolves once `c` has received a complete `HTTP/1.1 200` head since the call. */
function response(c: tls.TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (/^HTTP\/1\.1 200[^]*\r\n\r\n/.test(text)) {
        c.off('data', onData);
        resolve();
      }
    };
    c.on('data', onData);
    c.once('close', () => reject(new Error('closed before a response')));
  });
}

/**
 * One TLS 1.2 connection: a request, then `renegotiate()`. Says how the
 * attempt ended (`renegotiated`, or the error/close that refused it) and, if
 * the connection survived, whether a second request still got its answer.
 */
async function renegotiationAttempt(): Promise<{ outcome: string; afterwards: string }> {
  const c = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, servername: 'localhost', rejectUnauthorized: false, maxVersion: 'TLSv1.2' });
  c.on('error', () => undefined); // reported through the outcome below
  await new Promise<void>((resolve, reject) => {
    c.once('secureConnect', resolve);
    c.once('error', reject);
  });
  const first = response(c);
  c.write(REQUEST);
  await first;
  const outcome = await new Promise<string>((resolve) => {
    c.once('error', (err: NodeJS.ErrnoException) => resolve(`refused (${err.code ?? err.message})`));
    c.once('close', () => resolve('closed'));
    const started = c.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ? `refused (${err.message})` : 'renegotiated'));
    if (!started) resolve('renegotiate() not started');
  });
  let afterwards = 'closed';
  if (!c.destroyed) {
    const second = response(c);
    c.write(REQUEST);
    afterwards = await second.then(
      () => 'data flows',
      () => 'closed',
    );
  }
  c.destroy();
  return { outcome, afterwards };
}

t.test('node client: renegotiate() is refused; the connection ends cleanly', async (t) => {
  // Node's server used to accept 3 attempts per connection: try more than that.
  for (let i = 0; i < 4; i++) {
    const r = await renegotiationAttempt();
    t.not(r.outcome, 'renegotiated', `attempt ${i + 1}: not renegotiated (${r.outcome})`);
    t.ok(['data flows', 'closed'].includes(r.afterwards), `attempt ${i + 1}: afterwards ${r.afterwards}`);
  }
  // Each refused connection is logged and counted once, as it closes.
  const closedTls12 = (): LogLine[] => sc.logs.filter((l) => l.event === 'connection_closed' && l['tls_version'] === 'TLSv1.2');
  await sc.waitForLog(() => closedTls12().length >= 4);
  t.equal(closedTls12().length, 4, 'one connection_closed line per refused connection');
  t.equal(metricValue(await sc.metrics(), 'ktls_sidecar_connections_closed_total', { tls_version: 'TLSv1.2' }), 4, 'counted once each');
  t.equal(sc.proc.exitCode, null, 'the sidecar is still running');
  t.equal((await request(sc.tlsPort, { ca: pki.caCert })).status, 200, 'new connections are served');
  t.equal((await sc.admin('/healthz')).status, 200);
});

t.test('openssl s_client -tls1_2 + R: refused with no_renegotiation', async (t) => {
  const r = await new Promise<{ out: string; err: string }>((resolve) => {
    // No -quiet or -ign_eof: they turn the R command off. `R`, then a request
    // line: a refused renegotiation ends s_client before it; an accepted one
    // would go on and send it.
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${sc.tlsPort}`, '-tls1_2', '-servername', 'localhost'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let sent = false;
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!sent && /Verify return code/.test(out)) {
        sent = true;
        p.stdin.write('R\n');
        setTimeout(() => p.stdin.writable && p.stdin.write('GET / HTTP/1.0\n\n'), 500);
        setTimeout(() => p.stdin.writable && p.stdin.end(), 1500);
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdin.on('error', () => undefined);
    const kill = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('close', () => {
      clearTimeout(kill);
      resolve({ out, err });
    });
  });
  t.match(r.out + r.err, /RENEGOTIATING/, 's_client asked to renegotiate');
  t.match(r.out + r.err, /no renegotiation/i, 'the server refused it');
  t.equal(sc.proc.exitCode, null, 'the sidecar is still running');
  t.equal((await handshake(sc.tlsPort)).protocol, 'TLSv1.3', 'new connections are served');
});
