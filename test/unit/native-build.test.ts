// native/build.mjs (the npm `install` hook) must never fail the install: a failed build
// prints exactly one warning naming the consequence, and exits 0.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = fileURLToPath(new URL('../../native', import.meta.url));

/** A copy of native/ (sources only) in a temp dir, so the real build is never touched. */
function copyNative(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'ktls-build-')), 'native');
  cpSync(nativeDir, dir, { recursive: true, filter: (src) => src !== join(nativeDir, 'build') && !src.startsWith(`${join(nativeDir, 'build')}/`) });
  return dir;
}

function runBuild(dir: string, env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(dir, 'build.mjs')], { cwd: dir, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('a compile error: exit 0, one warning with the first compiler error, reason left for the loader', (t) => {
  const dir = copyNative();
  writeFileSync(join(dir, 'src', 'poller.cc'), 'this is not C++;\n');
  // binding.gyp finds node-addon-api through node's resolution: point it at the checkout's.
  const r = runBuild(dir, { NODE_PATH: fileURLToPath(new URL('../../node_modules', import.meta.url)) });
  t.equal(r.status, 0, 'the install goes on');
  const warnings = r.stderr.split('\n').filter((l) => l.startsWith('ktls-sidecar: WARNING'));
  t.equal(warnings.length, 1, 'exactly one warning');
  t.match(warnings[0], /native kTLS addon not built \(.*error.*\); the sidecar will run with userspace TLS only \(ktls_reason="native_unavailable"\)/);
  t.notOk(existsSync(join(dir, 'build', 'Release', 'ktls_native.node')));
  t.match(readFileSync(join(dir, 'build', 'build-failure.txt'), 'utf8'), /error/);
  t.end();
});

t.test('KTLS_SIDECAR_NATIVE_BUILD=0 skips the build with the same single warning', (t) => {
  const dir = copyNative();
  const r = runBuild(dir, { KTLS_SIDECAR_NATIVE_BUILD: '0' });
  t.equal(r.status, 0);
  t.match(r.stderr, /^ktls-sidecar: WARNING: native kTLS addon not built \(KTLS_SIDECAR_NATIVE_BUILD=0\)/);
  t.equal(r.stderr.trim().split('\n').length, 1);
  t.end();
});

t.test('a configure error (node-addon-api not resolvable) names the gyp failure', (t) => {
  const dir = copyNative();
  const r = runBuild(dir, { NODE_PATH: '' });
  t.equal(r.status, 0);
  t.match(r.stderr, /^ktls-sidecar: WARNING: native kTLS addon not built \(node-gyp exited 1: gyp: Call to 'node -p "require\('node-addon-api'\)/m);
  t.end();
});

t.test("a nodedir of another Node (root's ~/.npmrc nodedir=/usr under the node devDependency) is not used", (t) => {
  const dir = copyNative();
  writeFileSync(join(dir, 'src', 'poller.cc'), 'this is not C++;\n');
  // Headers that declare another version than the running Node's.
  const other = mkdtempSync(join(tmpdir(), 'ktls-other-node-'));
  mkdirSync(join(other, 'include', 'node'), { recursive: true });
  writeFileSync(
    join(other, 'include', 'node', 'node_version.h'),
    '#define NODE_MAJOR_VERSION 1\n#define NODE_MINOR_VERSION 2\n#define NODE_PATCH_VERSION 3\n',
  );
  writeFileSync(join(other, 'include', 'node', 'node.h'), '#error wrong headers\n');
  const r = runBuild(dir, { npm_config_nodedir: other, NODE_PATH: fileURLToPath(new URL('../../node_modules', import.meta.url)) });
  t.equal(r.status, 0);
  // node-gyp records the headers it configured with; the build then failed on our broken source.
  const nodedir = /"nodedir": "([^"]*)"/.exec(readFileSync(join(dir, 'build', 'config.gypi'), 'utf8'))?.[1] ?? '';
  t.not(nodedir, other, 'the mismatched nodedir is ignored');
  const h = readFileSync(join(nodedir, 'include', 'node', 'node_version.h'), 'utf8');
  const v = ['MAJOR', 'MINOR', 'PATCH'].map((k) => new RegExp(`^#define NODE_${k}_VERSION (\\d+)$`, 'm').exec(h)?.[1]).join('.');
  t.equal(v, process.versions.node, `configured with this Node's own headers (${nodedir})`);
  t.match(r.stderr, /native kTLS addon not built \(node-gyp exited \d+: .*poller\.cc.*error/, 'it got as far as compiling our source');
  t.end();
});
