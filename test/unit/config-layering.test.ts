// Precedence: defaults < --config FILE < KTLS_SIDECAR_* env < CLI flags, and
// nothing read implicitly from process.argv/env.
import t from 'tap';
import { join } from 'node:path';
import { loadConfig } from '../../proxy/config/index.js';

const demo = ['--demo'];

t.test('defaults apply when nothing is given', (t) => {
  const c = loadConfig({ argv: demo, env: {}, cwd: t.testdir() });
  t.equal(c.listen.host, '0.0.0.0');
  t.equal(c.listen.port, 8443);
  t.equal(c.admin.port, 9901);
  t.equal(c.shutdown.drainTimeout, 30_000);
  t.equal(c.limits.maxHandshakeBufferBytes, 1024 * 1024);
  t.equal(c.ktls.direction, 'tx');
  t.equal(c.file, null);
  t.same(c.sources.map((s) => s.layer), ['default', 'flag']);
  t.end();
});

t.test('a YAML file overrides defaults', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen:\n  port: 7000\nshutdown:\n  drainTimeout: 2m\n' });
  const c = loadConfig({ argv: [...demo, '--config', 'c.yaml'], env: {}, cwd: dir });
  t.equal(c.listen.port, 7000);
  t.equal(c.shutdown.drainTimeout, 120_000);
  t.equal(c.file, join(dir, 'c.yaml'));
  t.same(c.sources[1], { layer: 'file', path: join(dir, 'c.yaml'), keys: ['listen.port', 'shutdown.drainTimeout'] });
  t.end();
});

t.test('a JSON file is read by its extension', (t) => {
  const dir = t.testdir({ 'c.json': JSON.stringify({ mode: 'tcp', upstream: { address: '[::1]:5432' } }) });
  const c = loadConfig({ argv: [...demo, '--config=c.json'], env: {}, cwd: dir });
  t.equal(c.mode, 'tcp');
  t.equal(c.upstream.address, '[::1]:5432');
  t.end();
});

t.test('env overrides the file', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen:\n  port: 7000\n' });
  const c = loadConfig({ argv: [...demo, '--config', 'c.yaml'], env: { KTLS_SIDECAR_LISTEN_PORT: '7001' }, cwd: dir });
  t.equal(c.listen.port, 7001);
  t.same(c.sources.map((s) => s.layer), ['default', 'file', 'env', 'flag']);
  t.end();
});

t.test('flags override env and file', (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen:\n  port: 7000\n' });
  const c = loadConfig({
    argv: [...demo, '--config', 'c.yaml', '--listen-port', '7002'],
    env: { KTLS_SIDECAR_LISTEN_PORT: '7001' },
    cwd: dir,
  });
  t.equal(c.listen.port, 7002);
  t.end();
});

t.test('the env name of a nested camelCase key is its UPPER_SNAKE dotted path', (t) => {
  const c = loadConfig({
    argv: demo,
    env: { KTLS_SIDECAR_SHUTDOWN_DRAIN_TIMEOUT: '500ms', KTLS_SIDECAR_TLS_CLIENT_CERT_HEADER: 'x-client', KTLS_SIDECAR_KTLS_FORCE_TLS13_RX: 'true' },
    cwd: t.testdir(),
  });
  t.equal(c.shutdown.drainTimeout, 500);
  t.equal(c.tls.clientCertHeader, 'x-client');
  t.equal(c.ktls.forceTls13Rx, true);
  t.end();
});

t.test('boolean flags: bare, --no- and =value forms', (t) => {
  const cwd = t.testdir();
  t.equal(loadConfig({ argv: [...demo, '--ktls-enabled=false'], env: {}, cwd }).ktls.enabled, false);
  t.equal(loadConfig({ argv: [...demo, '--no-ktls-enabled'], env: {}, cwd }).ktls.enabled, false);
  t.equal(loadConfig({ argv: [...demo, '--no-ktls-enabled', '--ktls-enabled'], env: {}, cwd }).ktls.enabled, true);
  t.equal(loadConfig({ argv: ['serve', '--demo'], env: {}, cwd }).demo, true);
  t.end();
});

t.test('KTLS_SIDECAR_CONFIG names the file; --config wins over it', (t) => {
  const dir = t.testdir({ 'a.yaml': 'listen:\n  port: 7101\n', 'b.yaml': 'listen:\n  port: 7102\n' });
  t.equal(loadConfig({ argv: demo, env: { KTLS_SIDECAR_CONFIG: 'a.yaml' }, cwd: dir }).listen.port, 7101);
  t.equal(loadConfig({ argv: [...demo, '--config', 'b.yaml'], env: { KTLS_SIDECAR_CONFIG: 'a.yaml' }, cwd: dir }).listen.port, 7102);
  t.end();
});

t.test('process.env and process.argv are not read', (t) => {
  process.env['KTLS_SIDECAR_LISTEN_PORT'] = '6553';
  t.teardown(() => {
    delete process.env['KTLS_SIDECAR_LISTEN_PORT'];
  });
  const c = loadConfig({ argv: demo, env: {}, cwd: t.testdir() });
  t.equal(c.listen.port, 8443);
  t.end();
});

t.test('env variables without the prefix are ignored', (t) => {
  const c = loadConfig({ argv: demo, env: { LISTEN_PORT: '1', PATH: '/bin', HOME: '/root' }, cwd: t.testdir() });
  t.equal(c.listen.port, 8443);
  t.end();
});

t.test('the native addon variables (KTLS_SIDECAR_NATIVE_*) are not config keys and are left alone', (t) => {
  const c = loadConfig({ argv: demo, env: { KTLS_SIDECAR_NATIVE_PATH: '/x.node', KTLS_SIDECAR_NATIVE_BUILD: '0' }, cwd: t.testdir() });
  t.same(c.sources.map((s) => s.layer), ['default', 'flag']);
  t.end();
});

t.test('the result is deeply frozen', (t) => {
  const c = loadConfig({ argv: demo, env: {}, cwd: t.testdir() });
  t.ok(Object.isFrozen(c));
  t.ok(Object.isFrozen(c.listen));
  t.ok(Object.isFrozen(c.ktls.ciphers));
  t.ok(Object.isFrozen(c.ktls.ciphers[0]));
  t.throws(() => {
    (c.listen as { port: number }).port = 1;
  });
  t.end();
});

t.test('ktls.ciphers: both name styles, per-cipher direction override', (t) => {
  const c = loadConfig({
    argv: [...demo, '--ktls-direction', 'tx', '--ktls-ciphers', 'TLS_AES_128_GCM_SHA256:txrx,ECDHE-RSA-AES128-GCM-SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'],
    env: {},
    cwd: t.testdir(),
  });
  t.same(
    c.ktls.ciphers.map((r) => [r.iana, r.openssl, r.direction]),
    [
      ['TLS_AES_128_GCM_SHA256', 'TLS_AES_128_GCM_SHA256', 'txrx'],
      ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'tx'],
      ['TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', 'ECDHE-RSA-AES256-GCM-SHA384', 'tx'],
    ],
  );
  t.end();
});

t.test('a file given as a list in YAML and env given as a comma list agree', (t) => {
  const dir = t.testdir({ 'c.yaml': 'ktls:\n  ciphers:\n    - TLS_AES_256_GCM_SHA384\n    - TLS_AES_128_GCM_SHA256:txrx\n' });
  const fromFile = loadConfig({ argv: [...demo, '--config', 'c.yaml'], env: {}, cwd: dir });
  const fromEnv = loadConfig({ argv: demo, env: { KTLS_SIDECAR_KTLS_CIPHERS: 'TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256:txrx' }, cwd: dir });
  t.same(fromFile.ktls.ciphers.map((r) => [r.iana, r.direction]), fromEnv.ktls.ciphers.map((r) => [r.iana, r.direction]));
  t.end();
});

t.test('an empty config file is an empty layer', (t) => {
  const dir = t.testdir({ 'empty.yaml': '' });
  const c = loadConfig({ argv: [...demo, '--config', 'empty.yaml'], env: {}, cwd: dir });
  t.equal(c.listen.port, 8443);
  t.same(c.sources[1]?.keys, []);
  t.end();
});

t.test('tls.sni from env as JSON', (t) => {
  // The entries are checked as key pairs, so point at files that do not exist and expect that error.
  let key: string | undefined;
  try {
    loadConfig({
      argv: demo,
      env: { KTLS_SIDECAR_TLS_SNI: JSON.stringify([{ servername: 'a.example', cert: 'a.pem', key: 'a.key' }]) },
      cwd: t.testdir(),
    });
  } catch (err) {
    key = (err as { key?: string }).key;
  }
  t.equal(key, 'tls.sni[0].cert');
  t.end();
});
