// Certificate hot reload the way Kubernetes updates a mounted Secret: new
// files in a timestamped directory, then an atomic rename of the `..data`
// symlink. Requests keep flowing during the swap (none may fail); a bad new
// certificate is rejected, logged and counted, and the old one stays.
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { handshake, request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());

const mount = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-secret-'));
t.teardown(() => fs.rmSync(mount, { recursive: true, force: true }));
let version = 0;
/** Publish a cert/key pair like the kubelet's atomic writer does. */
function publish(cert: string, key: string): void {
  const dir = path.join(mount, `..2026_11_25_v${++version}`);
  fs.mkdirSync(dir);
  fs.copyFileSync(cert, path.join(dir, 'tls.crt'));
  fs.copyFileSync(key, path.join(dir, 'tls.key'));
  const tmp = path.join(mount, '..data_tmp');
  fs.symlinkSync(path.basename(dir), tmp);
  fs.renameSync(tmp, path.join(mount, '..data'));
}
publish(pki.server.cert, pki.server.key);
fs.symlinkSync('..data/tls.crt', path.join(mount, 'tls.crt'));
fs.symlinkSync('..data/tls.key', path.join(mount, 'tls.key'));

const sc = await startSidecar(['--tls-cert', path.join(mount, 'tls.crt'), '--tls-key', path.join(mount, 'tls.key'), '--upstream-url', up.url]);
t.teardown(() => sc.stop());
const ca = fs.readFileSync(pki.caCert);

t.test('a ..data symlink swap reloads the certificate with no failed request', async (t) => {
  t.equal((await handshake(sc.tlsPort)).cn, 'localhost');
  const agent = new https.Agent({ keepAlive: true, maxSockets: 4, ca });
  t.teardown(() => agent.destroy());
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  // Two kinds of traffic: keep-alive connections and a new connection per request.
  const loop = async (useAgent: boolean): Promise<void> => {
    while (!stop) {
      try {
        const r = await request(sc.tlsPort, { ca: pki.caCert, agent: useAgent ? agent : false });
        if (r.status === 200) ok++;
        else failures.push(`status ${r.status}`);
      } catch (err) {
        failures.push(String(err));
      }
    }
  };
  const loops = [loop(true), loop(true), loop(false), loop(false)];
  await new Promise((r) => setTimeout(r, 200));
  publish(pki.server2.cert, pki.server2.key);
  await sc.waitForLog((l) => l.event === 'cert_reload' && l['result'] === 'success');
  await new Promise((r) => setTimeout(r, 200));
  stop = true;
  await Promise.all(loops);
  t.same(failures, [], 'no request failed');
  t.ok(ok > 0, `${ok} requests succeeded during the swap`);
  t.equal((await handshake(sc.tlsPort)).cn, 'localhost-v2', 'new connections get the new certificate');
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_cert_reloads_total', { result: 'success' }) >= 1);
});

t.test('a certificate whose key does not match is rejected; the old one stays', async (t) => {
  const before = metricValue(await sc.metrics(), 'ktls_sidecar_cert_reloads_total', { result: 'failure' });
  publish(pki.alt.cert, pki.server.key);
  const line = await sc.waitForLog((l) => l.event === 'cert_reload' && l['result'] === 'failure');
  t.equal(line.level, 'warn');
  t.notMatch(JSON.stringify(line), /PRIVATE KEY/, 'no key material in the log');
  t.equal(metricValue(await sc.metrics(), 'ktls_sidecar_cert_reloads_total', { result: 'failure' }), before + 1);
  t.equal((await handshake(sc.tlsPort)).cn, 'localhost-v2', 'still the last good certificate');
  const r = await request(sc.tlsPort, { ca: pki.caCert });
  t.equal(r.status, 200);
});
