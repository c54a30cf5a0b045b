// The typed loader of the native addon: lazy, never throwing from nativeStatus(),
// a clear reason when the addon is missing or broken, and the fd helper.
import t from 'tap';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultAddonPath, loadNative, native, nativeStatus, socketFd } from '../../native/index.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));

/** Runs a snippet in a fresh node (with tsx) from the repo root; returns its stdout. */
function runNode(code: string, env: Record<string, string> = {}): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: repo,
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

t.test('the built addon loads from the package root', (t) => {
  const s = nativeStatus();
  t.same(s, { available: true, path: join(repo, 'native', 'build', 'Release', 'ktls_native.node') });
  t.equal(defaultAddonPath(), join(repo, 'native', 'build', 'Release', 'ktls_native.node'));
  t.equal(typeof native().attachUlp, 'function');
  t.equal(native().constants.SOL_TLS, 282);
  t.end();
});

t.test('importing the loader does not load the addon; the first nativeStatus() does, once', (t) => {
  const r = runNode(`
    let n = 0;
    const orig = process.dlopen;
    process.dlopen = (...a) => { n++; return orig.apply(process, a); };
    const m = await import('./native/index.ts');
    const afterImport = n;
    m.nativeStatus(); m.nativeStatus(); m.native();
    console.log(JSON.stringify({ afterImport, afterUse: n }));
  `);
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { afterImport: 0, afterUse: 1 });
  t.end();
});

t.test('a missing addon gives available:false with the path and how to build it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ktls-native-'));
  const r = loadNative(join(dir, 'build', 'Release', 'ktls_native.node'));
  t.equal(r.native, null);
  t.equal(r.status.available, false);
  t.match(r.status, { reason: /not built.*ktls_native\.node is missing.*native\/build\.mjs/ });
  t.end();
});

t.test('a recorded build failure is part of the reason', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ktls-native-'));
  writeFileSync(join(dir, 'build-failure.txt'), 'node-gyp exited 1: no g++\n');
  const r = loadNative(join(dir, 'Release', 'ktls_native.node'));
  t.match(r.status, { available: false, reason: /build failed: node-gyp exited 1: no g\+\+/ });
  t.end();
});

t.test('a file that is not a loadable addon gives available:false, not a throw', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ktls-native-'));
  const bogus = join(dir, 'ktls_native.node');
  writeFileSync(bogus, 'not an ELF file');
  const r = loadNative(bogus);
  t.equal(r.native, null);
  t.match(r.status, { available: false, reason: /failed to load/ });
  t.end();
});

t.test('an older build of the addon (no AEAD opener) is refused with the remedy, not half used', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ktls-native-'));
  // A module with the older addon's surface: the syscalls and the splice pump, no createAeadOpener.
  const older = join(dir, 'older.cjs');
  writeFileSync(older, 'const f = () => {}; module.exports = { setErrorClass: f, setCryptoInfo: f, createSplicePump: f };\n');
  const r = loadNative(older);
  t.equal(r.native, null);
  t.match(r.status, { available: false, reason: /older build of the addon .*node native\/build\.mjs/ });
  t.end();
});

t.test('the build before the one-number receives (object results, a wrapped AEAD opener) is refused too', (t) => {
  // Its surface: everything loadNative() used to require, but recvRecord / recvPlain answering objects and
  // createAeadOpener as a class. Wrapping it would call functions it does not have.
  const dir = mkdtempSync(join(tmpdir(), 'ktls-native-'));
  const older = join(dir, 'older.cjs');
  writeFileSync(older, 'const f = () => {}; module.exports = { setErrorClass: f, setCryptoInfo: f, createSplicePump: f, ' +
    'createAeadOpener: f, sendPlain: f, recvRecord: f, recvPlain: f };\n');
  const r = loadNative(older);
  t.equal(r.native, null);
  t.match(r.status, { available: false, reason: /older build of the addon .*node native\/build\.mjs/ });
  t.end();
});

t.test('native() throws ERR_KTLS_SIDECAR_NATIVE_UNAVAILABLE with the reason when the addon is missing', (t) => {
  const r = runNode(
    `
    const m = await import('./native/index.ts');
    const s = m.nativeStatus();
    try { m.native(); console.log(JSON.stringify({ s, threw: false })); }
    catch (e) { console.log(JSON.stringify({ s, threw: true, code: e.code, message: e.message })); }
  `,
    { KTLS_SIDECAR_NATIVE_PATH: '/nonexistent/ktls_native.node' },
  );
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { s: { available: boolean }; threw: boolean; code: string; message: string };
  t.equal(out.s.available, false);
  t.equal(out.threw, true);
  t.equal(out.code, 'ERR_KTLS_SIDECAR_NATIVE_UNAVAILABLE');
  t.match(out.message, /\/nonexistent\/ktls_native\.node is missing/);
  t.end();
});

t.test('socketFd: an fd for a connected socket, null before connect and after destroy', async (t) => {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const unconnected = new net.Socket();
  t.equal(socketFd(unconnected), null, 'no handle yet');
  const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => c.once('connect', resolve));
  const fd = socketFd(c);
  t.ok(Number.isInteger(fd) && (fd ?? -1) >= 0, `fd ${fd}`);
  c.destroy();
  t.equal(socketFd(c), null, 'destroyed');
  t.equal(socketFd({}), null, 'not a socket');
});
