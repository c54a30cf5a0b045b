// `ktls-sidecar doctor`: the human table and --json, exit codes, and what this host says.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { runDoctor } from '../../proxy/doctor.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const noConfigTls = existsSync('/proc/config.gz') && /^# CONFIG_TLS is not set$/m.test(gunzipSync(readFileSync('/proc/config.gz')).toString());

function capture(): { io: { stdout: { write(s: string): boolean }; stderr: { write(s: string): boolean } }; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    io: { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) } },
    out: () => out,
    err: () => err,
  };
}

t.test('human output: every section, and the cipher table', async (t) => {
  const c = capture();
  const code = await runDoctor([], c.io);
  const out = c.out();
  for (const label of ['kernel', 'native addon', 'tls ULP', 'tls module', 'kTLS', 'TLS 1.3 rekey', 'TLS_TX_ZEROCOPY_RO', 'TLS_RX_EXPECT_NO_PAD', 'NIC TLS offload', '/proc/net/tls_stat']) {
    t.match(out, new RegExp(`^${label.replace(/[/.]/g, '\\$&')}\\s`, 'm'), label);
  }
  t.match(out, /^cipher\s+TLSv1\.2 TX\s+TLSv1\.2 RX\s+TLSv1\.3 TX\s+TLSv1\.3 RX$/m);
  for (const cipher of ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128']) t.match(out, new RegExp(`^${cipher}\\s+(yes|no)`, 'm'));
  t.equal(code, /^kTLS\s+AVAILABLE$/m.test(out) ? 0 : 1, 'exit code follows availability');
  t.equal(c.err(), '');
});

t.test('on a kernel without CONFIG_TLS the doctor says so, with what to do, and exits 1', { skip: noConfigTls ? false : 'this kernel has CONFIG_TLS' }, async (t) => {
  const c = capture();
  t.equal(await runDoctor([], c.io), 1);
  t.match(c.out(), /^kTLS\s+NOT AVAILABLE \(kernel_no_config_tls\)$/m);
  t.match(c.out(), /built without CONFIG_TLS/);
  t.match(c.out(), /TCP_ULP "tls" -> ENOENT/);
  t.match(c.out(), /what to do: run the sidecar on a kernel with CONFIG_TLS=m or =y/);
});

t.test('--json: one parseable document with the summary and the details', async (t) => {
  const c = capture();
  const code = await runDoctor(['--json'], c.io);
  const doc = JSON.parse(c.out()) as Record<string, unknown>;
  t.match(doc, {
    available: Boolean,
    kernelTls: Boolean,
    release: String,
    native: { available: true },
    ulp: { attach: String },
    module: { loaded: Boolean },
    rekey: { supported: Boolean },
    options: { TLS_TX_ZEROCOPY_RO: { supported: Boolean }, TLS_RX_EXPECT_NO_PAD: { supported: Boolean } },
    nicOffload: { visible: Boolean, note: String },
    problems: Array,
  });
  t.equal((doc['ciphers'] as unknown[]).length, 16);
  t.equal(code, doc['available'] ? 0 : 1);
  if (noConfigTls) t.match(doc, { reasonIfNot: 'kernel_no_config_tls', module: { config: 'n' }, ulp: { attach: 'ENOENT' } });
});

t.test('usage: --help exits 0, an unknown argument exits 2 with the usage on stderr', async (t) => {
  const h = capture();
  t.equal(await runDoctor(['--help'], h.io), 0);
  t.match(h.out(), /usage: ktls-sidecar doctor \[--json\]/);
  t.match(h.out(), /^Exit codes:$/m, '--help documents the exit codes');
  t.match(h.out(), /^ {2}0 {2}kTLS is usable/m);
  t.match(h.out(), /^ {2}1 {2}kTLS is not usable here .*the sidecar still serves, in userspace TLS$/m);
  t.match(h.out(), /^ {2}2 {2}usage error/m);
  const bad = capture();
  t.equal(await runDoctor(['--jsn'], bad.io), 2);
  t.match(bad.err(), /unknown argument "--jsn"/);
  t.equal(bad.out(), '');
});

// No NIC offload is the normal case (software kTLS does not need it): a row of information,
// never an entry under "problems" (the human list or --json), however visible the NICs are.
t.test('NIC TLS offload is information, not a problem', async (t) => {
  const text = capture();
  await runDoctor([], text.io);
  t.match(text.out(), /^NIC TLS offload\s+.*\(info: software kTLS does not need it\)$/m);
  const problems = text.out().split(/^problems:$/m)[1] ?? '';
  t.notMatch(problems, /NIC|offload/, 'not listed under problems');
  const json = capture();
  await runDoctor(['--json'], json.io);
  const doc = JSON.parse(json.out()) as { problems: Array<{ what: string }>; nicOffload: { visible: boolean; note: string } };
  t.same(doc.problems.filter((p) => /NIC|offload/i.test(p.what)), [], `--json problems (nicOffload: ${doc.nicOffload.note})`);
});

t.test('run as a process without the addon: says native_unavailable and why', (t) => {
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', "const m = await import('./proxy/doctor.ts'); process.exitCode = await m.runDoctor([]);"],
    { cwd: repo, env: { ...process.env, KTLS_SIDECAR_NATIVE_PATH: '/nonexistent/ktls_native.node' }, encoding: 'utf8' },
  );
  t.equal(r.status, 1, r.stderr);
  t.match(r.stdout, /^native addon\s+NO: the addon was not built/m);
  t.match(r.stdout, /^kTLS\s+NOT AVAILABLE \(native_unavailable\)$/m);
  t.end();
});
