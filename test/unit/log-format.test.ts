// The log lines: JSON, redaction of secret-looking fields, the startup
// summary and the per-connection close line.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadConfig } from '../../proxy/config/index.js';
import { logConnectionClose, logStartupSummary } from '../../proxy/log.js';
import { captureLog } from '../helpers/log-capture.js';

t.test('lines are JSON with a word level, ISO time and the service name', (t) => {
  const { lines, logger } = captureLog('info');
  logger.info({ a: 1 }, 'hello');
  t.equal(lines.length, 1);
  t.equal(lines[0]?.['level'], 'info');
  t.equal(lines[0]?.['name'], 'ktls-sidecar');
  t.match(String(lines[0]?.['time']), /^\d{4}-\d\d-\d\dT/);
  t.equal(lines[0]?.['msg'], 'hello');
  t.end();
});

t.test('the level filters', (t) => {
  const { lines, logger } = captureLog('info');
  logger.debug('hidden');
  logger.warn('shown');
  t.same(lines.map((l) => l['msg']), ['shown']);
  t.end();
});

t.test('secret-looking fields are redacted at any of the first three levels', (t) => {
  const { raw, lines, logger } = captureLog('info');
  const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  logger.info(
    {
      key,
      tls: { key: 'secret-1', trafficSecret: 'secret-2' },
      conn: { crypto: { iv: 'secret-3', salt: 'secret-4' } },
      req: { headers: { authorization: 'Bearer secret-5', cookie: 'secret-6', 'proxy-authorization': 'secret-7' } },
      password: 'secret-8',
    },
    'careless',
  );
  t.notMatch(raw.join('\n'), /secret-\d|00112233/);
  t.equal(lines[0]?.['key'], '[Redacted]');
  t.end();
});

t.test('deeper, differently cased, in arrays and errors: censored too; the caller\'s objects are untouched', (t) => {
  const { raw, lines, logger } = captureLog('info');
  const headers = { Authorization: 'Bearer secret-1', 'Set-Cookie': ['secret-2'], host: 'a.example' };
  const err = Object.assign(new Error('handshake failed'), { code: 'EPROTO', key: Buffer.from('secret-3'), detail: { passphrase: 'secret-4' } });
  logger.warn({ a: { b: { c: { token: 'secret-5' } } }, list: [{ Password: 'secret-6' }], res: { headers }, err }, 'careless');
  t.notMatch(raw.join('\n'), /secret-\d|c2VjcmV0|115,101,99/, 'no secret in any form');
  const l = lines[0] ?? {};
  t.match(l, { res: { headers: { host: 'a.example', Authorization: '[Redacted]', 'Set-Cookie': '[Redacted]' } }, list: [{ Password: '[Redacted]' }] });
  t.match(l['err'], { type: 'Error', message: 'handshake failed', code: 'EPROTO', key: '[Redacted]', detail: { passphrase: '[Redacted]' } });
  t.equal(headers.Authorization, 'Bearer secret-1', 'copy on write: the caller keeps its values');
  t.ok(Buffer.isBuffer(err.key));
  t.end();
});

t.test('errors are logged under err with the standard serializer (type, message, stack, code)', (t) => {
  const { lines, logger } = captureLog('info');
  const e = Object.assign(new RangeError('port out of range'), { code: 'ERR_SOCKET_BAD_PORT' });
  logger.error({ event: 'x', err: e }, 'failed');
  logger.error(new TypeError('bare error'));
  const first = lines[0]?.['err'] as Record<string, unknown>;
  t.equal(first['type'], 'RangeError');
  t.equal(first['message'], 'port out of range');
  t.equal(first['code'], 'ERR_SOCKET_BAD_PORT');
  t.match(String(first['stack']), /^RangeError: port out of range\n\s+at /);
  t.match(lines[1]?.['err'], { type: 'TypeError', message: 'bare error' }, 'an Error as the only argument lands under err too');
  t.equal(lines[0]?.['error'], undefined, 'nothing under error');
  t.end();
});

t.test('the connection close line has every field', (t) => {
  const { lines, logger } = captureLog('info');
  logConnectionClose(logger, {
    id: 7,
    remoteAddress: '10.0.0.5',
    remotePort: 51234,
    servername: 'api.example',
    protocol: 'h2',
    tlsVersion: 'TLSv1.3',
    cipher: 'TLS_AES_128_GCM_SHA256',
    alpn: 'h2',
    bytesIn: 1200,
    bytesOut: 98000,
    durationMs: 1532.4,
    closeReason: 'client_close',
    ktls: 'on',
    ktlsReason: 'enabled',
    direction: 'tx',
  });
  const l = lines[0] ?? {};
  t.same(
    {
      event: l['event'], remote: l['remote'], servername: l['servername'], protocol: l['protocol'], tls_version: l['tls_version'],
      cipher: l['cipher'], alpn: l['alpn'], bytes_in: l['bytes_in'], bytes_out: l['bytes_out'], duration_ms: l['duration_ms'],
      close_reason: l['close_reason'], ktls: l['ktls'], ktls_reason: l['ktls_reason'], direction: l['direction'], conn: l['conn'],
    },
    {
      event: 'connection_closed', remote: '10.0.0.5:51234', servername: 'api.example', protocol: 'h2', tls_version: 'TLSv1.3',
      cipher: 'TLS_AES_128_GCM_SHA256', alpn: 'h2', bytes_in: 1200, bytes_out: 98000, duration_ms: 1532,
      close_reason: 'client_close', ktls: 'on', ktls_reason: 'enabled', direction: 'tx', conn: 7,
    },
  );
  t.equal(l['level'], 'info');
  t.end();
});

t.test('a userspace close line without SNI/ALPN, with its error under err as type + code + message only', (t) => {
  const { lines, logger } = captureLog('info');
  const err = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', request: { headers: { authorization: 'x' } } });
  logConnectionClose(logger, {
    remoteAddress: '::1',
    protocol: 'http1',
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 3,
    closeReason: 'error',
    ktls: 'off',
    ktlsReason: 'not_attempted',
    servername: false,
    alpn: false,
    error: err,
  });
  const l = lines[0] ?? {};
  t.equal(l['servername'], null);
  t.equal(l['alpn'], null);
  t.equal(l['direction'], 'none');
  t.equal(l['remote'], '::1');
  t.same(l['err'], { type: 'Error', code: 'ECONNRESET', message: 'socket hang up' });
  t.end();
});

t.test('the startup summary lists sources, listeners, certificates and kTLS settings', (t) => {
  const dir = t.testdir({ 'c.yaml': 'ktls:\n  sampleRate: 0.5\n  ciphers: [TLS_AES_128_GCM_SHA256, "TLS_AES_256_GCM_SHA384:txrx"]\n' });
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '5', '-subj', '/CN=summary.example'], { stdio: 'ignore' });
  const config = loadConfig({ argv: ['--config', 'c.yaml', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'], env: { KTLS_SIDECAR_LOG_LEVEL: 'debug' }, cwd: dir });
  const { lines, raw, logger } = captureLog('info');
  logStartupSummary(logger, {
    config,
    listeners: [
      { name: 'tls', address: '0.0.0.0:8443' },
      { name: 'admin', address: '127.0.0.1:9901' },
    ],
    kernel: { available: false, reason: 'kernel_no_tls' },
  });
  const s = lines.find((l) => l['event'] === 'startup') ?? {};
  t.same(
    (s['config_sources'] as { layer: string }[]).map((x) => x.layer),
    ['default', 'file', 'env', 'flag'],
  );
  t.same(s['listeners'], [
    { name: 'tls', address: '0.0.0.0:8443' },
    { name: 'admin', address: '127.0.0.1:9901' },
  ]);
  const certs = s['certificates'] as { subject: string; servername: string; days_left: number; not_after: string }[];
  t.equal(certs[0]?.subject, 'CN=summary.example');
  t.equal(certs[0]?.servername, '*');
  t.ok((certs[0]?.days_left ?? -1) >= 4 && (certs[0]?.days_left ?? 99) <= 5);
  t.same((s['ktls'] as { ciphers: string[] }).ciphers, ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384:txrx']);
  t.same(s['log'], { level: 'debug', connections: 'errors' }, 'which lines this sidecar writes');
  t.notMatch(raw.join('\n'), /PRIVATE KEY|BEGIN/);
  const warn = lines.find((l) => l['event'] === 'cert_expiry');
  t.equal(warn?.['level'], 'warn', 'a certificate expiring within 14 days is warned about');
  t.end();
});

t.test('demo mode is announced loudly', (t) => {
  const config = loadConfig({ argv: ['--demo'], env: {}, cwd: t.testdir() });
  const { lines, logger } = captureLog('info');
  logStartupSummary(logger, { config, listeners: [], demoCertificate: 'CN=localhost' });
  const warn = lines.find((l) => l['event'] === 'demo_mode');
  t.equal(warn?.['level'], 'warn');
  t.match(String(warn?.['msg']), /DEMO MODE/);
  t.end();
});
