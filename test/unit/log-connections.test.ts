// log.connections: which connections get a connection_closed line. The key
// (values, config errors naming it), the failure/normal split of the close
// observer, sampling, a reload changing it, and the default against the real CLI.
import t from 'tap';
import { loadConfig } from '../../proxy/config/index.js';
import { type LogConnections, parseLogConnections } from '../../proxy/config/schema.js';
import { ConfigError } from '../../proxy/errors.js';
import { closeLog, wantsCloseLine } from '../../proxy/observe/close-log.js';
import type { ConnectionEnd, OpenedConnection } from '../../proxy/observe/events.js';
import type { CloseReason } from '../../proxy/vocabulary.js';
import { captureLog } from '../helpers/log-capture.js';
import { runCli } from '../helpers/sidecar.js';

t.test('values: all, errors, off, sample:<rate>; the default is errors', (t) => {
  t.same(parseLogConnections('all'), { normal: 1, failures: true });
  t.same(parseLogConnections('errors'), { normal: 0, failures: true });
  t.same(parseLogConnections('off'), { normal: 0, failures: false });
  t.same(parseLogConnections('sample:0.01'), { normal: 0.01, failures: true });
  t.same(parseLogConnections('sample:1'), { normal: 1, failures: true });
  t.equal(loadConfig({ argv: ['--demo'], env: {} }).log.connections, 'errors');
  t.equal(loadConfig({ argv: ['--demo'], env: { KTLS_SIDECAR_LOG_CONNECTIONS: 'sample:0.25' } }).log.connections, 'sample:0.25');
  t.equal(loadConfig({ argv: ['--demo', '--log-connections', 'off'], env: { KTLS_SIDECAR_LOG_CONNECTIONS: 'all' } }).log.connections, 'off', 'the flag outranks env');
  t.end();
});

t.test('a bad value is a config error naming log.connections', (t) => {
  for (const bad of ['loud', 'sample:0', 'sample:1.5', 'sample:', 'sample:x', 'sample:-0.1', 'ALL']) {
    try {
      loadConfig({ argv: ['--demo', '--log-connections', bad], env: {} });
      t.fail(`${bad} was accepted`);
    } catch (err) {
      t.type(err, ConfigError);
      t.equal((err as ConfigError).key, 'log.connections', bad);
      t.match((err as ConfigError).reason, /all, errors, off or sample:<rate> with 0 < rate <= 1/);
    }
  }
  t.end();
});

t.test('the CLI: one line naming the key, exit 2', async (t) => {
  const r = await runCli(['--demo', '--log-connections', 'sample:2']);
  t.equal(r.code, 2);
  t.match(r.stderr, /^ktls-sidecar: config error: log\.connections: /);
  t.equal(r.stderr.trim().split('\n').length, 1);
});

const conn: OpenedConnection = {
  id: 9,
  remoteAddress: '127.0.0.1',
  remotePort: 4000,
  acceptedAt: performance.now(),
  servername: 'a.example',
  alpn: 'http/1.1',
  tlsVersion: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  labels: { ktls: 'off', ktls_reason: 'flag_off', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', direction: 'none', protocol: 'http1' },
  bytes: { rx: 0, tx: 0 },
} as unknown as OpenedConnection;

const end = (reason: CloseReason, error?: unknown): ConnectionEnd => ({ reason, error, bytesIn: 1, bytesOut: 2, closeInfo: {} });

/** Every kind of end once; returns the close reasons that got a line. */
function logged(setting: () => LogConnections): string[] {
  const { lines, logger } = captureLog('info');
  const o = closeLog(logger, setting);
  const who = { id: 1, remoteAddress: '127.0.0.1', remotePort: 1, acceptedAt: performance.now() };
  o.refused?.(who, { kind: 'rejected', reason: 'no_data' });
  o.refused?.(who, { kind: 'rejected', reason: 'limit' });
  o.refused?.(who, { kind: 'handshake_failure', reason: 'no_shared_cipher' }, new Error('no shared cipher'));
  for (const r of ['client_close', 'upstream_close', 'idle_timeout', 'shutdown', 'ktls_drain', 'headers_timeout', 'bad_request', 'upstream_error', 'key_update_limit', 'error', 'other'] as const) {
    o.opened?.(conn).closed?.(end(r));
  }
  o.opened?.(conn).closed?.(end('upstream_close', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })));
  // A client's reset carries its error, and is still the client's normal way out.
  o.opened?.(conn).closed?.(end('client_reset', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })));
  return lines.filter((l) => l['event'] === 'connection_closed').map((l) => `${String(l['close_reason'])}${l['err'] ? '+err' : ''}`);
}

const FAILURES = ['limit', 'handshake_no_shared_cipher+err', 'headers_timeout', 'bad_request', 'upstream_error', 'key_update_limit', 'error', 'other', 'upstream_close+err'];

t.test('errors: failed handshakes, refusals but probes, failure ends and any end with an error', (t) => {
  t.same(logged(() => 'errors'), FAILURES);
  t.end();
});

t.test('all: every connection; off: none', (t) => {
  t.equal(logged(() => 'all').length, 3 + 11 + 2);
  t.same(logged(() => 'off'), []);
  t.end();
});

t.test('sample: that share of normal closes, every failure', (t) => {
  const policy = { normal: 0.1, failures: true };
  let n = 0;
  const draws = [0.05, 0.5, 0.0999, 0.1, 0.99];
  const random = (): number => draws[n++ % draws.length] ?? 1;
  t.same(draws.map(() => wantsCloseLine(policy, false, random)), [true, false, true, false, false]);
  t.ok(wantsCloseLine(policy, true, () => 0.99), 'a failure is never sampled out');
  // With Math.random: about 10% of 20000 normal closes (binomial, 6 sigma: 1745..2255).
  let kept = 0;
  for (let i = 0; i < 20_000; i++) if (wantsCloseLine(policy, false)) kept++;
  t.ok(kept > 1745 && kept < 2255, `${kept} of 20000 at sample:0.1`);
  const lines = logged(() => 'sample:0.000001');
  t.same(lines, FAILURES, 'a tiny rate still logs every failure');
  t.end();
});

t.test('a reload changes it for the connections that close after it', (t) => {
  let setting: LogConnections = 'errors';
  const { lines, logger } = captureLog('info');
  const o = closeLog(logger, () => setting);
  o.opened?.(conn).closed?.(end('client_close'));
  setting = 'all';
  o.opened?.(conn).closed?.(end('client_close'));
  setting = 'off';
  o.opened?.(conn).closed?.(end('error', new Error('boom')));
  t.equal(lines.filter((l) => l['event'] === 'connection_closed').length, 1);
  t.end();
});
