#!/usr/bin/env node
/* global process */
// `npm install` hook: build native/build/Release/ktls_native.node with node-gyp.
//
// This script must never fail the install. Without the addon the sidecar still
// works, in userspace TLS only (ktls_reason="native_unavailable"), so a failed
// build prints one clear warning and exits 0. KTLS_SIDECAR_NATIVE_BUILD=0 skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
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
  // Distribution node (headers in /usr/include/node): without --nodedir node-gyp downloads headers.
  const nodedir = process.env.npm_config_nodedir || (existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: nativeDir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
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
  process.stdout.write(`ktls-sidecar: native kTLS addon built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

try {
  main();
} catch (err) {
  warn(err instanceof Error ? err.message : String(err));
}
process.exitCode = 0;
