// SIGHUP reload and the config-file watch: a good new file gives a new
// config with env and flags still on top; a bad one gives the ConfigError and
// the caller keeps the old config.
import t from 'tap';
import { renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../proxy/errors.js';
import { loadConfig, reloadConfig, watchConfigFile, type LoadedConfig } from '../../proxy/config/index.js';

t.test('reload re-reads the file and keeps env and flags on top', (t) => {
  const dir = t.testdir({ 'c.yaml': 'ktls:\n  enabled: true\nlisten:\n  port: 7000\n' });
  const first = loadConfig({ argv: ['--demo', '--config', 'c.yaml', '--admin-port', '0'], env: { KTLS_SIDECAR_LISTEN_PORT: '7005' }, cwd: dir });
  writeFileSync(join(dir, 'c.yaml'), 'ktls:\n  enabled: false\nlisten:\n  port: 7001\nadmin:\n  port: 9999\n');
  const next = reloadConfig(first);
  if (next instanceof ConfigError) throw next;
  t.equal(next.ktls.enabled, false);
  t.equal(next.listen.port, 7005, 'env still wins over the file');
  t.equal(next.admin.port, 0, 'flags still win over the file');
  t.equal(first.ktls.enabled, true, 'the old config is unchanged');
  t.equal(next.file, first.file);
  t.end();
});

t.test('a bad file on reload returns the ConfigError', (t) => {
  const dir = t.testdir({ 'c.yaml': 'ktls:\n  enabled: true\n' });
  const first = loadConfig({ argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  writeFileSync(join(dir, 'c.yaml'), 'ktls:\n  enabled: perhaps\n');
  const next = reloadConfig(first);
  t.type(next, ConfigError);
  t.equal((next as ConfigError).key, 'ktls.enabled');
  t.end();
});

t.test('a reload of a config not made by loadConfig is an error, not a throw', (t) => {
  const c = loadConfig({ argv: ['--demo'], env: {}, cwd: t.testdir() });
  const fake: LoadedConfig = { ...c };
  t.type(reloadConfig(fake), ConfigError);
  t.end();
});

t.test('the watch reports a changed file, then an invalid one', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'ktls:\n  enabled: true\n' });
  const first = loadConfig({ argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  const events: string[] = [];
  let resolveNext: (() => void) | undefined;
  const nextEvent = (): Promise<void> => new Promise((r) => (resolveNext = r));
  const watcher = watchConfigFile(first, {
    intervalMs: 20,
    persistent: true,
    onChange: (c) => {
      events.push(`change enabled=${c.ktls.enabled}`);
      resolveNext?.();
    },
    onError: (e) => {
      events.push(`error ${e.key}`);
      resolveNext?.();
    },
  });
  if (!watcher) throw new Error('no watcher');
  t.teardown(() => watcher.close());
  let p = nextEvent();
  writeFileSync(join(dir, 'c.yaml'), 'ktls:\n  enabled: false\n# changed\n');
  await p;
  t.equal(watcher.current.ktls.enabled, false);
  p = nextEvent();
  writeFileSync(join(dir, 'c.yaml'), 'ktls:\n  enabled: 3\n# broken\n');
  await p;
  t.same(events, ['change enabled=false', 'error ktls.enabled']);
  t.equal(watcher.current.ktls.enabled, false, 'the last valid config stays current');
});

t.test('the watch sees a Kubernetes-style symlink swap', async (t) => {
  const dir = t.testdir({ v1: { 'c.yaml': 'ktls:\n  enabled: true\n' }, v2: { 'c.yaml': 'ktls:\n  enabled: false\n' } });
  symlinkSync(join(dir, 'v1'), join(dir, 'data'));
  symlinkSync(join('data', 'c.yaml'), join(dir, 'c.yaml'));
  const first = loadConfig({ argv: ['--demo', '--config', 'c.yaml'], env: {}, cwd: dir });
  const changed = new Promise<LoadedConfig>((resolve, reject) => {
    const w = watchConfigFile(first, { intervalMs: 20, persistent: true, onChange: resolve, onError: reject });
    t.teardown(() => w?.close());
  });
  // What the kubelet does: a new target, then an atomic rename of the link.
  symlinkSync(join(dir, 'v2'), join(dir, 'data.tmp'));
  renameSync(join(dir, 'data.tmp'), join(dir, 'data'));
  t.equal((await changed).ktls.enabled, false);
});

t.test('no file, no watcher', (t) => {
  const c = loadConfig({ argv: ['--demo'], env: {}, cwd: t.testdir() });
  t.equal(watchConfigFile(c, { onChange: () => undefined, onError: () => undefined }), null);
  t.end();
});
