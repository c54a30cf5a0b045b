// config/default.yaml, docs/config.md and config/examples/ agree with the schema.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { loadConfig } from '../../proxy/config/index.js';
import { schemaKeys } from '../../proxy/config/schema.js';
import { renderDefaultYaml, withConfigTable } from '../../proxy/config/reference.js';

const REGENERATE = 'regenerate with: node --import tsx proxy/config/reference.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const defaultYaml = join(root, 'config/default.yaml');

/** The schema's defaults as a nested plain object (what config/default.yaml must contain). */
function schemaDefaults(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, leaf } of schemaKeys()) {
    const path = key.split('.');
    let node = out;
    for (const p of path.slice(0, -1)) node = (node[p] ??= {}) as Record<string, unknown>;
    node[path[path.length - 1] ?? ''] = leaf.default;
  }
  return out;
}

t.test('config/default.yaml holds exactly the schema defaults', (t) => {
  t.same(parse(readFileSync(defaultYaml, 'utf8')), schemaDefaults());
  t.end();
});

t.test('config/default.yaml is the rendering of the schema, comments included', (t) => {
  t.equal(readFileSync(defaultYaml, 'utf8'), renderDefaultYaml(), REGENERATE);
  t.end();
});

t.test('the key table in docs/config.md is the rendering of the schema', (t) => {
  const doc = readFileSync(join(root, 'docs/config.md'), 'utf8');
  t.equal(doc, withConfigTable(doc), REGENERATE);
  t.end();
});

t.test('loading config/default.yaml gives the same config as loading nothing', (t) => {
  const cwd = t.testdir();
  const strip = (c: object): object => {
    const { sources: _s, file: _f, ...rest } = c as Record<string, unknown>;
    return rest;
  };
  const bare = loadConfig({ argv: ['--demo'], env: {}, cwd });
  const viaFile = loadConfig({ argv: ['--demo', '--config', defaultYaml], env: {}, cwd });
  t.same(strip(viaFile), strip(bare));
  t.equal(viaFile.sources[1]?.keys.length, schemaKeys().length, 'the file sets every key');
  t.end();
});

t.test('the key table in README.md is the rendering of the schema', (t) => {
  const doc = readFileSync(join(root, 'README.md'), 'utf8');
  t.equal(doc, withConfigTable(doc), REGENERATE);
  t.end();
});

t.test('docs/config.md documents every key with its env name and flag', (t) => {
  const doc = readFileSync(join(root, 'docs/config.md'), 'utf8');
  for (const k of schemaKeys()) {
    const rows = doc.split('\n').filter((l) => l.startsWith(`| \`${k.key}\` |`));
    t.ok(
      rows.some((r) => r.includes(`| \`${k.env}\` | \`${k.flag}\` |`)),
      `${k.key}: a row with ${k.env} and ${k.flag}`,
    );
  }
  t.end();
});

t.test('env names and flags are derived as documented', (t) => {
  const byKey = new Map(schemaKeys().map((k) => [k.key, k]));
  t.equal(byKey.get('shutdown.drainTimeout')?.env, 'KTLS_SIDECAR_SHUTDOWN_DRAIN_TIMEOUT');
  t.equal(byKey.get('listen.port')?.flag, '--listen-port');
  t.equal(byKey.get('tls.clientCA')?.env, 'KTLS_SIDECAR_TLS_CLIENT_CA');
  t.equal(byKey.get('ktls.forceTls13Rx')?.flag, '--ktls-force-tls13-rx');
  t.equal(byKey.get('config.watch')?.flag, '--config-watch');
  const flags = schemaKeys().map((k) => k.flag);
  t.equal(new Set(flags).size, flags.length, 'no two keys share a flag');
  t.notOk(flags.includes('--config'), '--config stays the file flag');
  t.end();
});

t.test('every example config loads (with test certificates in place of the mounted ones)', (t) => {
  const dir = t.testdir();
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=example'], { stdio: 'ignore' });
  const examples = readdirSync(join(root, 'config/examples')).filter((f) => f.endsWith('.yaml'));
  t.ok(examples.length >= 4);
  for (const f of examples) {
    const c = loadConfig({
      argv: ['--config', join(root, 'config/examples', f), '--tls-cert', cert, '--tls-key', key, '--tls-client-ca', cert],
      env: {},
      cwd: dir,
    });
    t.ok(c.sources[1]?.keys.length, `${f} sets keys`);
  }
  t.end();
});
