// The config file the chart writes is a valid config for the sidecar itself: it goes through the
// sidecar's own loader (proxy/config), which rejects unknown keys, wrong formats and bad PEM files.
// Only the mount paths are moved to a temp dir holding a real certificate.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../../proxy/config/index.js';
import { exampleValuesFiles, find, render, type Manifest, type RenderOptions } from './helpers/render.js';

// tap's Test type without importing its internals: the argument of a test callback.
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

/** A throwaway P-256 certificate and key (also used as the client CA bundle). */
function certDir(t: TapTest): string {
  const dir = t.testdir({});
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'tls.crt'),
  ], { stdio: 'ignore' });
  return dir;
}

/** Render, take config.yaml out of the ConfigMap, repoint its PEM paths at `dir`, load it. */
async function loadRendered(t: TapTest, o: RenderOptions): Promise<ReturnType<typeof loadConfig>> {
  const ms: Manifest[] = await render(o);
  const text = (find(ms, 'ConfigMap', '-config')['data'] as Record<string, string>)['config.yaml'] ?? '';
  const cfg = parse(text) as { tls: Record<string, unknown> };
  const dir = certDir(t);
  for (const k of ['cert', 'key', 'clientCA'] as const) {
    const v = cfg.tls[k];
    if (typeof v === 'string' && v !== '') cfg.tls[k] = join(dir, k === 'key' ? 'tls.key' : 'tls.crt');
  }
  const file = join(dir, 'config.yaml');
  writeFileSync(file, stringify(cfg));
  return loadConfig({ argv: ['--config', file], env: {}, cwd: dir });
}

t.test('the default values give a config the sidecar loads', async (t) => {
  const c = await loadRendered(t, {});
  t.equal(c.admin.host, '0.0.0.0');
  t.equal(c.admin.port, 9901);
  t.equal(c.listen.port, 8443);
  t.equal(c.upstream.url, 'http://127.0.0.1:8080');
  t.equal(c.config.watch, true);
  t.equal(c.ktls.enabled, true);
  t.equal(c.shutdown.drainTimeout, 30_000);
});

for (const file of exampleValuesFiles()) {
  t.test(`examples/${basename(file)} gives a config the sidecar loads`, async (t) => {
    const c = await loadRendered(t, { valuesFiles: [file] });
    t.ok(c.ktls.sampleRate >= 0 && c.ktls.sampleRate <= 1);
  });
}

t.test('rollout values land in the sidecar config with their types', async (t) => {
  const c = await loadRendered(t, {
    set: { 'ktls.sampleRate': '0.05', 'ktls.direction': 'txrx', 'ktls.drainTimeout': '45s', 'ktls.enabled': 'false' },
    setJson: { 'ktls.ciphers': ['TLS_AES_128_GCM_SHA256:tx', 'ECDHE-RSA-AES128-GCM-SHA256'] },
  });
  t.equal(c.ktls.sampleRate, 0.05, '--set gives a string; the config holds the number');
  t.equal(c.ktls.direction, 'txrx');
  t.equal(c.ktls.drainTimeout, 45_000);
  t.equal(c.ktls.enabled, false);
  t.same(c.ktls.ciphers.map((r) => [r.iana, r.direction]), [['TLS_AES_128_GCM_SHA256', 'tx'], ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'txrx']]);
});

t.test('sidecar.workers lands in the sidecar config (default 1; a number or auto)', async (t) => {
  t.equal((await loadRendered(t, {})).workers, 1);
  t.equal((await loadRendered(t, { set: { 'sidecar.workers': '4' } })).workers, 4);
  t.equal((await loadRendered(t, { set: { 'sidecar.workers': 'auto' } })).workers, 'auto');
});

t.test('sidecar.extraConfig reaches the sidecar, and a typo in it is refused before a pod runs', async (t) => {
  const c = await loadRendered(t, { setJson: { 'sidecar.extraConfig': { timeouts: { idle: '2m' }, limits: { maxConnections: 5 } } } });
  t.equal(c.timeouts.idle, 120_000);
  t.equal(c.limits.maxConnections, 5);
  // The chart's values schema mirrors the sidecar's (chart-extra-config.test.ts): helm refuses it.
  await t.rejects(loadRendered(t, { setJson: { 'sidecar.extraConfig': { timeouts: { idel: '2m' } } } }), /extraConfig\/timeouts.*idel/);
});
