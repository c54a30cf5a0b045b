// TLS versions (openssl s_client), SNI certificate choice, ALPN, and mTLS
// with the verified identity forwarded as x-forwarded-client-cert.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { TlsContexts, type TlsSettings } from '../../proxy/tls/context.js';
import { handshake, request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());
const sni = JSON.stringify([
  { servername: 'alt.example', cert: pki.alt.cert, key: pki.alt.key },
  { servername: '*.wild.example', cert: pki.alt.cert, key: pki.alt.key },
]);
const [plain, mtlsRequired, mtlsOptional] = await Promise.all([
  startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, '--tls-sni', sni]),
  startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, '--tls-client-ca', pki.caCert]),
  startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, '--tls-client-ca', pki.caCert, '--no-tls-request-cert']),
]);
t.teardown(() => Promise.all([plain.stop(), mtlsRequired.stop(), mtlsOptional.stop()]));

function sClient(port: number, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const p = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-brief', ...args], { timeout: 10_000 }, (_err, stdout, stderr) =>
      resolve(`${stdout}\n${stderr}`),
    );
    p.stdin?.end('Q\n');
  });
}

t.test('TLS 1.2 handshake (openssl s_client -tls1_2)', async (t) => {
  const out = await sClient(plain.tlsPort, ['-tls1_2', '-servername', 'localhost']);
  t.match(out, /Protocol version: TLSv1\.2/);
  t.match(out, /Ciphersuite: ECDHE-ECDSA-AES(128|256)-GCM/);
});

t.test('TLS 1.3 handshake (openssl s_client -tls1_3)', async (t) => {
  const out = await sClient(plain.tlsPort, ['-tls1_3', '-servername', 'localhost']);
  t.match(out, /Protocol version: TLSv1\.3/);
});

t.test('TLS 1.1 is refused and counted as protocol_version', async (t) => {
  const out = await sClient(plain.tlsPort, ['-tls1_1', '-servername', 'localhost']);
  t.notMatch(out, /Protocol version: TLSv1\.1/);
  const m = await plain.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_handshake_failures_total', { reason: 'protocol_version' }) >= 1, 'counted');
});

t.test('SNI picks the matching certificate', async (t) => {
  t.equal((await handshake(plain.tlsPort, { servername: 'alt.example' })).cn, 'alt.example');
  t.equal((await handshake(plain.tlsPort, { servername: 'a.wild.example' })).cn, 'alt.example', 'wildcard');
  t.equal((await handshake(plain.tlsPort, { servername: 'localhost' })).cn, 'localhost', 'default');
  t.equal((await handshake(plain.tlsPort, { servername: 'unknown.example' })).cn, 'localhost', 'unknown name gets the default');
});

t.test('ALPN offers h2 and http/1.1', async (t) => {
  t.equal((await handshake(plain.tlsPort, { ALPNProtocols: ['h2'] })).alpn, 'h2');
  t.equal((await handshake(plain.tlsPort, { ALPNProtocols: ['http/1.1'] })).alpn, 'http/1.1');
});

t.test('mTLS: a client certificate from the CA is accepted and forwarded as XFCC', async (t) => {
  const r = await request(mtlsRequired.tlsPort, {
    path: '/headers',
    ca: pki.caCert,
    cert: pki.client.cert,
    key: pki.client.key,
    headers: { 'x-forwarded-client-cert': 'Hash=forged' },
  });
  t.equal(r.status, 200);
  const xfcc = String((JSON.parse(r.body.toString()) as Record<string, string>)['x-forwarded-client-cert']);
  t.match(xfcc, /^By=spiffe:\/\/test\/sidecar;Hash=[0-9a-f]{64};Subject="O=Tests,CN=client one";URI=spiffe:\/\/test\/client$/);
  t.notMatch(xfcc, /forged/);
});

t.test('mTLS required: a client without a certificate is rejected and counted', async (t) => {
  await t.rejects(request(mtlsRequired.tlsPort, { path: '/', ca: pki.caCert }));
  const m = await mtlsRequired.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_handshake_failures_total', { reason: 'client_cert_required' }) >= 1);
});

t.test('mTLS: a certificate from another CA is rejected and counted', async (t) => {
  await t.rejects(request(mtlsRequired.tlsPort, { path: '/', ca: pki.caCert, cert: pki.rogueClient.cert, key: pki.rogueClient.key }));
  const m = await mtlsRequired.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_handshake_failures_total', { reason: 'client_cert_invalid' }) >= 1);
});

t.test('mTLS optional: no certificate passes, and a forged XFCC is stripped', async (t) => {
  const r = await request(mtlsOptional.tlsPort, { path: '/headers', ca: pki.caCert, headers: { 'x-forwarded-client-cert': 'Hash=forged' } });
  t.equal(r.status, 200);
  t.notOk('x-forwarded-client-cert' in (JSON.parse(r.body.toString()) as Record<string, string>));
});

t.test('the server applies its own cipher order (honorCipherOrder)', async (t) => {
  const v12 = ['ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305'];
  const v13 = ['TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256'];
  const sc = await startSidecar([
    '--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url,
    '--tls-ciphers', v12.join(':'), '--tls-ciphersuites', v13.join(':'),
  ]);
  t.teardown(() => sc.stop());
  // A client offering the server's list in reverse order still gets the server's first choice.
  const cipherOf = (opts: tls.ConnectionOptions): Promise<string | undefined> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, servername: 'localhost', rejectUnauthorized: false, ...opts }, () => {
        resolve(s.getCipher().name);
        s.end();
      });
      s.on('error', reject);
    });
  t.equal(await cipherOf({ maxVersion: 'TLSv1.2', ciphers: [...v12].reverse().join(':') }), v12[0], 'TLS 1.2');
  t.equal(await cipherOf({ minVersion: 'TLSv1.3', ciphers: [...v13].reverse().join(':') }), v13[0], 'TLS 1.3');
});

t.test('a key file other users can read is warned about once per path and mode, without key bytes', (t) => {
  const dir = t.testdir();
  const cert = path.join(dir, 'tls.crt');
  const key = path.join(dir, 'tls.key');
  fs.copyFileSync(pki.server.cert, cert);
  fs.copyFileSync(pki.server.key, key);
  const settings: TlsSettings = {
    cert, key, sni: [], minVersion: 'TLSv1.2', ciphers: '', ciphersuites: '', clientCA: '', requestCert: false, sessionTickets: true,
  };
  const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const warn = (obj: object, msg: string): void => void warnings.push({ obj: obj as Record<string, unknown>, msg });
  const loadWith = (mode: number): void => {
    fs.chmodSync(key, mode);
    TlsContexts.load(settings, undefined, { warn });
  };

  loadWith(0o600);
  t.equal(warnings.length, 0, '0600: no warning');
  // The group bit alone is fine when the group is ours (a Kubernetes Secret read through fsGroup, mode 0440).
  fs.chownSync(key, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
  loadWith(0o640);
  t.equal(warnings.length, 0, '0640 with our own group: no warning');

  loadWith(0o644);
  loadWith(0o644); // a reload of the same file
  t.equal(warnings.length, 1, '0644: one warning, not one per reload');
  t.match(warnings[0]?.obj, { event: 'key_file_permissions', config_key: 'tls.key', path: key, mode: '0644' });
  t.match(warnings[0]?.msg, `tls.key: private key file ${key} is accessible to every user (mode 0644)`);
  const keyPem = fs.readFileSync(pki.server.key, 'utf8');
  const body = keyPem.split('\n')[1] ?? 'unreachable';
  t.notMatch(JSON.stringify(warnings), body, 'no key bytes');
  t.notMatch(JSON.stringify(warnings), /PRIVATE KEY/);

  loadWith(0o666);
  t.equal(warnings.length, 2, 'a new mode is a new warning');
  t.end();
});
