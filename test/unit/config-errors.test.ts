// Every class of bad configuration is a ConfigError (code
// ERR_KTLS_SIDECAR_CONFIG) naming the key and the reason, on one line.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../proxy/errors.js';
import { loadConfig } from '../../proxy/config/index.js';
import type { LoadOptions } from '../../proxy/config/load.js';
import { runCli } from '../helpers/sidecar.js';

/** A self-signed P-256 certificate + key written by openssl into `dir`. */
function makeCert(dir: string, name: string, cn = 'localhost'): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
  return { cert, key };
}

function configError(t: Test, options: LoadOptions): ConfigError {
  try {
    loadConfig(options);
  } catch (err) {
    t.type(err, ConfigError);
    const e = err as ConfigError;
    t.equal(e.code, 'ERR_KTLS_SIDECAR_CONFIG');
    t.notMatch(e.message, /\n/, 'one line');
    t.equal(e.message, `${e.key}: ${e.reason}`);
    return e;
  }
  throw new Error('loadConfig did not throw');
}

t.test('unknown key in the file names the key and suggests the right one', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen:\n  prot: 1\n' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(e.key, 'listen.prot');
  t.match(e.reason, /unknown key.*listen\.port/);
  t.end();
});

t.test('unknown top-level key in a JSON file', (t) => {
  const dir = t.testdir({ 'c.json': '{"ktsl": {"enabled": false}}' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.json'], env: {}, cwd: dir });
  t.equal(e.key, 'ktsl');
  t.end();
});

t.test('a scalar where a section belongs', (t) => {
  const dir = t.testdir({ 'c.yaml': 'tls: yes\n' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(e.key, 'tls');
  t.match(e.reason, /section/);
  t.end();
});

t.test('unknown flag', (t) => {
  const e = configError(t, { argv: ['--demo', '--admin-prot', '1'], env: {}, cwd: t.testdir() });
  t.equal(e.key, '--admin-prot');
  t.match(e.reason, /unknown flag.*--admin-port/);
  t.end();
});

t.test('unknown KTLS_SIDECAR_ variable', (t) => {
  const e = configError(t, { argv: ['--demo'], env: { KTLS_SIDECAR_LISTEN_PROT: '1' }, cwd: t.testdir() });
  t.equal(e.key, 'KTLS_SIDECAR_LISTEN_PROT');
  t.match(e.reason, /KTLS_SIDECAR_LISTEN_PORT/);
  t.end();
});

t.test('a flag without its value', (t) => {
  const e = configError(t, { argv: ['--demo', '--listen-port'], env: {}, cwd: t.testdir() });
  t.equal(e.key, '--listen-port');
  t.match(e.reason, /missing value/);
  t.end();
});

t.test('a stray positional argument', (t) => {
  const e = configError(t, { argv: ['--demo', 'oops'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'oops');
  t.end();
});

t.test('wrong type in the file', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen:\n  port: eighty\n' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(e.key, 'listen.port');
  t.match(e.reason, /port number/);
  t.match(e.reason, /c\.yaml/, 'names the layer that set it');
  t.end();
});

t.test('wrong type from env names the variable', (t) => {
  const e = configError(t, { argv: ['--demo'], env: { KTLS_SIDECAR_TIMEOUTS_IDLE: 'forever' }, cwd: t.testdir() });
  t.equal(e.key, 'timeouts.idle');
  t.match(e.reason, /duration/);
  t.match(e.reason, /KTLS_SIDECAR_TIMEOUTS_IDLE/);
  t.end();
});

t.test('wrong type from a flag names the flag', (t) => {
  const e = configError(t, { argv: ['--demo', '--ktls-sample-rate', '1.5'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'ktls.sampleRate');
  t.match(e.reason, /--ktls-sample-rate/);
  t.end();
});

t.test('a boolean that is not a boolean', (t) => {
  const e = configError(t, { argv: ['--demo'], env: { KTLS_SIDECAR_KTLS_ENABLED: 'sometimes' }, cwd: t.testdir() });
  t.equal(e.key, 'ktls.enabled');
  t.end();
});

t.test('a value outside an enum', (t) => {
  const e = configError(t, { argv: ['--demo', '--mode', 'udp'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'mode');
  t.match(e.reason, /http.*tcp/);
  t.end();
});

t.test('the admin server on the TLS port', (t) => {
  const e = configError(t, { argv: ['--demo', '--admin-port', '8443', '--admin-host', '0.0.0.0'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'admin.port');
  t.end();
});

t.test('maxConnections of 0', (t) => {
  const e = configError(t, { argv: ['--demo'], env: { KTLS_SIDECAR_LIMITS_MAX_CONNECTIONS: '0' }, cwd: t.testdir() });
  t.equal(e.key, 'limits.maxConnections');
  t.match(e.reason, /at least 1.*KTLS_SIDECAR_LIMITS_MAX_CONNECTIONS/);
  t.end();
});

t.test('a bad upstream URL', (t) => {
  const e = configError(t, { argv: ['--demo', '--upstream-url', 'ftp://x'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'upstream.url');
  t.end();
});

t.test('a bad upstream address', (t) => {
  const e = configError(t, { argv: ['--demo', '--upstream-address', 'localhost'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'upstream.address');
  t.end();
});

t.test('a cipher kTLS cannot hold', (t) => {
  const e = configError(t, { argv: ['--demo', '--ktls-ciphers', 'TLS_AES_128_GCM_SHA256,DES-CBC3-SHA'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'ktls.ciphers');
  t.match(e.reason, /DES-CBC3-SHA/);
  t.match(e.reason, /entry 2/, 'the reason names the entry');
  t.end();
});

t.test('a bad per-cipher direction', (t) => {
  const e = configError(t, { argv: ['--demo', '--ktls-ciphers', 'TLS_AES_128_GCM_SHA256:rx'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'ktls.ciphers');
  t.match(e.reason, /":tx" or ":txrx"/);
  t.end();
});

t.test('a kTLS suite listed twice with different directions', (t) => {
  const e = configError(t, { argv: ['--demo', '--ktls-ciphers', 'TLS_AES_128_GCM_SHA256:tx,TLS_AES_128_GCM_SHA256:txrx'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'ktls.ciphers');
  t.match(e.reason, /twice/);
  t.end();
});

t.test('an OpenSSL cipher list that matches nothing', (t) => {
  const e = configError(t, { argv: ['--demo', '--tls-ciphers', 'NOT-A-CIPHER'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'tls.ciphers');
  t.end();
});

t.test('an unknown TLS 1.3 suite', (t) => {
  const e = configError(t, { argv: ['--demo', '--tls-ciphersuites', 'TLS_AES_128_GCM_SHA256:TLS_NOPE'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'tls.ciphersuites');
  t.match(e.reason, /TLS_NOPE/);
  t.end();
});

t.test('an unreadable config file', (t) => {
  const e = configError(t, { argv: ['--demo', '--config', 'missing.yaml'], env: {}, cwd: t.testdir() });
  t.equal(e.key, '--config');
  t.match(e.reason, /ENOENT/);
  t.end();
});

t.test('a config file with an unknown extension', (t) => {
  const dir = t.testdir({ 'c.toml': 'x = 1' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.toml'], env: {}, cwd: dir });
  t.match(e.reason, /\.toml/);
  t.end();
});

t.test('a config file that is not valid YAML', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen: [\n' });
  const e = configError(t, { argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(e.key, '--config');
  t.match(e.reason, /not valid YAML/);
  t.end();
});

t.test('no certificate and no demo', (t) => {
  const e = configError(t, { argv: [], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'tls.cert');
  t.match(e.reason, /required/);
  t.end();
});

t.test('a certificate without its key', (t) => {
  const dir = t.testdir();
  const { cert } = makeCert(dir, 'a');
  const e = configError(t, { argv: ['--tls-cert', cert], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.end();
});

t.test('an unreadable certificate names tls.cert and the path', (t) => {
  const dir = t.testdir();
  const { key } = makeCert(dir, 'a');
  const e = configError(t, { argv: ['--tls-cert', 'nope.crt', '--tls-key', key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.cert');
  t.match(e.reason, /nope\.crt.*ENOENT/);
  t.end();
});

t.test('an unreadable key names tls.key', { skip: process.getuid?.() === 0 ? 'root reads mode-000 files' : false }, (t) => {
  const dir = t.testdir();
  const { cert, key } = makeCert(dir, 'a');
  chmodSync(key, 0o000);
  const e = configError(t, { argv: ['--tls-cert', cert, '--tls-key', key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.match(e.reason, /EACCES/);
  t.end();
});

t.test('a key path that is a directory names tls.key', (t) => {
  const dir = t.testdir({ sub: {} });
  const { cert } = makeCert(dir, 'a');
  const e = configError(t, { argv: ['--tls-cert', cert, '--tls-key', 'sub'], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.match(e.reason, /EISDIR/);
  t.end();
});

t.test('a certificate file that holds no certificate', (t) => {
  const dir = t.testdir({ 'junk.crt': 'hello' });
  const { key } = makeCert(dir, 'a');
  const e = configError(t, { argv: ['--tls-cert', 'junk.crt', '--tls-key', key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.cert');
  t.match(e.reason, /no PEM certificate/);
  t.end();
});

t.test('a key that does not match the certificate', (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a');
  const b = makeCert(dir, 'b');
  const e = configError(t, { argv: ['--tls-cert', a.cert, '--tls-key', b.key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.match(e.reason, /does not match/);
  t.notMatch(e.message, /PRIVATE KEY|BEGIN/, 'no key material in the message');
  t.end();
});

t.test('a key file that is not a key, and no key bytes in the message', (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a');
  writeFileSync(join(dir, 'bad.key'), readFileSync(a.key, 'utf8').replace(/[A-Za-z0-9]{20}/, 'x'));
  const e = configError(t, { argv: ['--tls-cert', a.cert, '--tls-key', 'bad.key'], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.match(e.reason, /not a valid PEM private key/);
  t.notMatch(e.message, /BEGIN|PRIVATE KEY-----/);
  t.end();
});

t.test('an SNI entry whose key does not match names the entry', (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a');
  const b = makeCert(dir, 'b', 'b.example');
  const sni = JSON.stringify([{ servername: 'b.example', cert: b.cert, key: a.key }]);
  const e = configError(t, { argv: ['--tls-cert', a.cert, '--tls-key', a.key, '--tls-sni', sni], env: {}, cwd: dir });
  t.equal(e.key, 'tls.sni[0].key');
  t.end();
});

t.test('an SNI entry with an unknown field', (t) => {
  const dir = t.testdir();
  const e = configError(t, { argv: ['--demo', '--tls-sni', '[{"servername":"a","cert":"x","key":"y","pass":"z"}]'], env: {}, cwd: dir });
  t.equal(e.key, 'tls.sni');
  t.match(e.reason, /pass/);
  t.end();
});

t.test('an unreadable client CA', (t) => {
  const e = configError(t, { argv: ['--demo', '--tls-client-ca', 'ca.pem'], env: {}, cwd: t.testdir() });
  t.equal(e.key, 'tls.clientCA');
  t.end();
});

// Paths that never end: each read is capped (1 MiB) and only regular files are
// read at all, so startup fails with a ConfigError instead of eating memory or
// blocking on a FIFO nobody writes to.
t.test('a certificate path that is a character device (/dev/zero) is refused', (t) => {
  const dir = t.testdir();
  const { key } = makeCert(dir, 'a');
  const e = configError(t, { argv: ['--tls-cert', '/dev/zero', '--tls-key', key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.cert');
  t.match(e.reason, /\/dev\/zero is a character device; point it at a regular file/);
  t.end();
});

t.test('a key path that is a FIFO with no writer is refused, not waited on', (t) => {
  const dir = t.testdir();
  const { cert } = makeCert(dir, 'a');
  execFileSync('mkfifo', [join(dir, 'key.fifo')]);
  const e = configError(t, { argv: ['--tls-cert', cert, '--tls-key', 'key.fifo'], env: {}, cwd: dir });
  t.equal(e.key, 'tls.key');
  t.match(e.reason, /key\.fifo is a FIFO; point it at a regular file/);
  t.end();
});

t.test('a certificate file over 1 MiB is refused', (t) => {
  const dir = t.testdir();
  const { cert, key } = makeCert(dir, 'a');
  // A real certificate padded past the cap: only the size can be the reason.
  writeFileSync(join(dir, 'big.crt'), Buffer.concat([readFileSync(cert), Buffer.alloc(1024 * 1024, 0x0a)]));
  const e = configError(t, { argv: ['--tls-cert', 'big.crt', '--tls-key', key], env: {}, cwd: dir });
  t.equal(e.key, 'tls.cert');
  t.match(e.reason, /big\.crt is larger than 1 MiB \(\d+ bytes\)/);
  t.end();
});

t.test('a config file over 1 MiB is refused (--config)', (t) => {
  const dir = t.testdir({ 'c.yaml': `# ${'x'.repeat(1024 * 1024)}\nktls:\n  enabled: false\n` });
  const e = configError(t, { argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(e.key, '--config');
  t.match(e.reason, /c\.yaml is larger than 1 MiB/);
  t.end();
});

t.test('a client CA path that is a FIFO is refused', (t) => {
  const dir = t.testdir();
  execFileSync('mkfifo', [join(dir, 'ca.fifo')]);
  const e = configError(t, { argv: ['--demo', '--tls-client-ca', 'ca.fifo'], env: {}, cwd: dir });
  t.equal(e.key, 'tls.clientCA');
  t.match(e.reason, /is a FIFO/);
  t.end();
});

t.test('the CLI exits 2 naming the key and path for a /dev/zero certificate', async (t) => {
  const dir = t.testdir();
  const { key } = makeCert(dir, 'a');
  const r = await runCli(['--tls-cert', '/dev/zero', '--tls-key', key]);
  t.equal(r.code, 2);
  t.match(r.stderr, /config error: tls\.cert: \/dev\/zero is a character device/);
});

t.test('a good pair loads and is summarised', (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a', 'good.example');
  const b = makeCert(dir, 'b', 'b.example');
  const c = loadConfig({
    argv: ['--tls-cert', 'a.crt', '--tls-key', 'a.key', '--tls-client-ca', 'b.crt', '--tls-sni', JSON.stringify([{ servername: 'B.example', cert: 'b.crt', key: 'b.key' }])],
    env: {},
    cwd: dir,
  });
  t.equal(c.tls.cert, a.cert, 'relative paths resolve against cwd');
  t.equal(c.tls.clientCA, b.cert);
  t.same(c.tls.sni, [{ servername: 'b.example', cert: b.cert, key: b.key }]);
  t.same(c.certificates.map((x) => [x.servername, x.subject]), [['*', 'CN=good.example'], ['b.example', 'CN=b.example']]);
  t.ok((c.certificates[0]?.notAfterMs ?? 0) > Date.now());
  t.end();
});
