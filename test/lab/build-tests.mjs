// test/lab/build-tests.mjs [SOURCE...]: prepares the kernel tests for the lab VM, on the host.
//
// 1. tsc -p test/lab/tsconfig.lab.json: test/kernel/** + proxy/** + native/index.ts (and
//    whatever they import) -> node_modules/.cache/ktls-sidecar-lab/build/ (BUILD below),
//    same layout as the checkout. Emit only (noCheck):
//    type errors are `npm run typecheck`'s job. Under TCG, loading TypeScript in the guest
//    costs more than the tests themselves.
// 2. The tap library, bundled with esbuild into ONE module at BUILD/node_modules/tap,
//    which is where Node resolves `import t from 'tap'` from BUILD/** first. Loading
//    tap's ~300 files one by one over 9p under TCG took 8-24 s per process; the bundle
//    takes a fraction of that. Everything else resolves to the checkout's node_modules.
// 3. Non-TypeScript files next to the sources (fixtures, JSON, .mjs) are linked into
//    BUILD so that paths relative to import.meta.url still work; so are config/ and
//    package.json. native/binding.gyp is NOT linked: native/index.ts finds the package
//    root (and the built addon) by looking for it, which must land on the checkout.
//
// Prints one "<compiled file>=<source file>" line per test file (paths relative to the
// checkout): every test/kernel/**/*.test.{ts,mts,js,mjs}, or only the SOURCE files given.
// Exit code: 0, or 1 with a message when the build failed.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// Under node_modules/.cache (where tools keep caches): ESLint, tsc's include globs, tap
// and git all leave it alone, and bare imports from there still resolve to node_modules.
const outRel = 'node_modules/.cache/ktls-sidecar-lab/build';
const out = join(repo, outRel);
const log = (msg) => process.stderr.write(`build-tests: ${msg}\n`);

function fail(msg) {
  log(msg);
  process.exit(1);
}

// ---- 1. tsc ------------------------------------------------------------------------
const t0 = Date.now();
const tsc = spawnSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', join(repo, 'test/lab/tsconfig.lab.json')], {
  cwd: repo,
  encoding: 'utf8',
  timeout: 300_000,
});
if (tsc.status !== 0) fail(`tsc failed (rc ${tsc.status}):\n${tsc.stdout}${tsc.stderr}${tsc.error ?? ''}`);
const t1 = Date.now();

// ---- 2. tap as one module ------------------------------------------------------------
const tapVersion = JSON.parse(readFileSync(join(repo, 'node_modules/tap/package.json'), 'utf8')).version;
const tapDir = join(out, 'node_modules', 'tap');
const stamp = join(tapDir, 'bundled-from');
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== `tap@${tapVersion}\n`) {
  const { build } = await import('esbuild');
  rmSync(tapDir, { recursive: true, force: true });
  await build({
    stdin: { contents: "export * from 'tap';\nexport { default } from 'tap';\n", resolveDir: repo, sourcefile: 'tap-entry.mjs', loader: 'js' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: join(tapDir, 'index.mjs'),
    logLevel: 'warning',
    // tap's CommonJS dependencies call require() and read __dirname; an ESM bundle has neither.
    banner: {
      js: [
        "import { createRequire as __labCreateRequire } from 'node:module';",
        "import { fileURLToPath as __labFileURLToPath } from 'node:url';",
        'const require = __labCreateRequire(import.meta.url);',
        'const __filename = __labFileURLToPath(import.meta.url);',
        "const __dirname = __labFileURLToPath(new URL('.', import.meta.url));",
      ].join(' '),
    },
  });
  writeFileSync(join(tapDir, 'package.json'), `${JSON.stringify({ name: 'tap', version: tapVersion, type: 'module', exports: './index.mjs' })}\n`);
  writeFileSync(stamp, `tap@${tapVersion}\n`);
}
const t2 = Date.now();

// ---- 3. assets -----------------------------------------------------------------------
const skipDirs = new Set(['node_modules', '.git', '.lab', '.tap', 'dist', 'coverage']);
const isTs = (name) => /\.(c|m)?ts$/.test(name) && !name.endsWith('.d.ts');
function link(src, dst) {
  try {
    if (lstatSync(dst)) return;
  } catch {
    // not there yet
  }
  mkdirSync(dirname(dst), { recursive: true });
  symlinkSync(src, dst);
}
function mirror(rel) {
  const src = join(repo, rel);
  if (!existsSync(src)) return;
  for (const entry of readdirSync(src, { withFileTypes: true })) {
    const r = join(rel, entry.name);
    if (entry.isDirectory()) {
      if (skipDirs.has(entry.name) || r === 'native/build' || r === 'native/src') continue;
      mirror(r);
    } else if (!isTs(entry.name) && r !== 'native/binding.gyp') {
      link(join(repo, r), join(out, r));
    }
  }
}
for (const dir of ['test', 'proxy', 'native']) mirror(dir);
for (const top of ['config', 'package.json']) if (existsSync(join(repo, top))) link(join(repo, top), join(out, top));

// ---- the test list -----------------------------------------------------------------
const testRe = /\.test\.(ts|mts|js|mjs)$/;
function findTests(rel) {
  const abs = join(repo, rel);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? findTests(join(rel, e.name)) : testRe.test(e.name) ? [join(rel, e.name)] : [],
  );
}
const wanted = process.argv.slice(2).map((f) => relative(repo, resolve(f)));
const sources = (wanted.length > 0 ? wanted : findTests('test/kernel')).sort();
for (const src of sources) {
  if (!existsSync(join(repo, src))) fail(`no such test file: ${src}`);
  const compiled = join(outRel, src.replace(/\.ts$/, '.js').replace(/\.mts$/, '.mjs'));
  if (!existsSync(join(repo, compiled))) fail(`${src} was not compiled to ${compiled} (outside test/kernel, proxy, native?)`);
  process.stdout.write(`${compiled}=${src}\n`);
}
log(`tsc ${((t1 - t0) / 1000).toFixed(1)} s, tap bundle ${((t2 - t1) / 1000).toFixed(1)} s, assets ${((Date.now() - t2) / 1000).toFixed(1)} s, ${sources.length} test files`);
