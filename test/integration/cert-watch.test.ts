// The certificate watcher reacts to the watched files only (and to Kubernetes'
// `..data` symlink swap), never to other files that share their directory: a
// log file appended to next to the certificate once meant a reload every
// ~230 ms, forever, and its chatter kept postponing a real reload.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CertFileWatcher } from '../../proxy/tls/certs.js';
import { handshake } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import type { Teardown } from '../helpers/teardown.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());

/** Append a line to `file` every 50 ms until stopped (a chatty log next to the certificate). */
function chattyLog(file: string): { stop: () => number } {
  let lines = 0;
  const timer = setInterval(() => {
    fs.appendFileSync(file, `line ${++lines}\n`);
  }, 50);
  return {
    stop: () => {
      clearInterval(timer);
      return lines;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A directory holding copies of a cert/key pair, removed at teardown. */
function certDir(t: Teardown, cert: string, key: string): { dir: string; cert: string; key: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-watch-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(cert, path.join(dir, 'tls.crt'));
  fs.copyFileSync(key, path.join(dir, 'tls.key'));
  return { dir, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
}

t.test('sidecar: a log file in the certificate directory triggers no reload; the real change exactly one', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const d = certDir(t, pki.server.cert, pki.server.key);
  const sc = await startSidecar(['--tls-cert', d.cert, '--tls-key', d.key, '--upstream-url', up.url]);
  t.teardown(() => sc.stop());
  const reloads = async (): Promise<number> => metricValue(await sc.metrics(), 'ktls_sidecar_cert_reloads_total');

  const log = chattyLog(path.join(d.dir, 'sidecar.log'));
  await sleep(2000);
  t.ok(log.stop() >= 20, 'the log was written to for 2 s');
  await sleep(500); // past the debounce: a reload the log caused would have run by now
  t.equal(await reloads(), 0, 'no reload from the log file');
  t.notOk(sc.logs.some((l) => l.event === 'cert_reload'), 'no cert_reload line');

  // The real change while the log keeps being written: one reload, not postponed by the log's chatter.
  const log2 = chattyLog(path.join(d.dir, 'sidecar.log'));
  t.teardown(() => log2.stop());
  fs.copyFileSync(pki.server2.key, d.key);
  fs.copyFileSync(pki.server2.cert, d.cert);
  const line = await sc.waitForLog((l) => l.event === 'cert_reload', 3000);
  t.equal(line['result'], 'success');
  log2.stop();
  await sleep(500);
  t.equal(await reloads(), 1, 'exactly one reload');
  t.equal((await handshake(sc.tlsPort)).cn, 'localhost-v2', 'serving the new certificate');
});

t.test('watcher: the Kubernetes ..data swap still reloads once; other names in the mount do not', async (t) => {
  const mount = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-secret-'));
  t.teardown(() => fs.rmSync(mount, { recursive: true, force: true }));
  let version = 0;
  const publish = (cert: string, key: string): void => {
    const dir = path.join(mount, `..2026_12_02_v${++version}`);
    fs.mkdirSync(dir);
    fs.copyFileSync(cert, path.join(dir, 'tls.crt'));
    fs.copyFileSync(key, path.join(dir, 'tls.key'));
    fs.symlinkSync(path.basename(dir), path.join(mount, '..data_tmp'));
    fs.renameSync(path.join(mount, '..data_tmp'), path.join(mount, '..data'));
  };
  publish(pki.server.cert, pki.server.key);
  fs.symlinkSync('..data/tls.crt', path.join(mount, 'tls.crt'));
  fs.symlinkSync('..data/tls.key', path.join(mount, 'tls.key'));

  let calls = 0;
  const watcher = new CertFileWatcher([path.join(mount, 'tls.crt'), path.join(mount, 'tls.key')], () => calls++, 100);
  t.teardown(() => watcher.close());

  // Unrelated names: an editor's swap file, a backup, a new directory.
  fs.writeFileSync(path.join(mount, '.tls.crt.swp'), 'x');
  fs.writeFileSync(path.join(mount, 'tls.crt.bak'), 'x');
  fs.mkdirSync(path.join(mount, 'other'));
  await sleep(400);
  t.equal(calls, 0, 'unrelated files are ignored');

  publish(pki.server2.cert, pki.server2.key);
  await sleep(400);
  t.equal(calls, 1, 'one ..data swap, one reload');
});
