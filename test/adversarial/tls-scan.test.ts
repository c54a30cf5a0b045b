// The TLS listener as a scanner sees it (sslscan, apt): only TLS 1.2 and 1.3,
// only AEAD suites, the server's own suite order, no renegotiation; and a
// client that asks for a TLS 1.2 renegotiation itself is refused.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { checkRecovered, type Usage, warmBaseline } from './helpers/resources.js';
import { startRecordingUpstream } from './helpers/recording-upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startRecordingUpstream();
t.teardown(() => up.close());
const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url]);
t.teardown(() => sc.stop());
const ca = pki.caCert;
let base: Usage | undefined;

t.before(async () => {
  base = await warmBaseline(sc, ca, up);
});

/** sslscan's XML report of the TLS port. */
function scan(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sslscan', ['--xml=-', '--no-colour', `127.0.0.1:${sc.tlsPort}`], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`sslscan failed (apt package sslscan, see .ci/run): ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Attributes of every `<tag .../>` element. */
function elements(xml: string, tag: string): Array<Record<string, string>> {
  return [...xml.matchAll(new RegExp(`<${tag}\\s([^>]*?)/?>`, 'g'))].map((m) =>
    Object.fromEntries([...(m[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1] ?? '', a[2] ?? ''])),
  );
}

// One scan, run by the first test that needs it (after the baseline).
let scanned: Promise<string> | undefined;
const report = (): Promise<string> => (scanned ??= scan());

t.test('sslscan: only TLS 1.2 and 1.3 are enabled (no SSLv2/3, TLS 1.0/1.1)', async (t) => {
  const protocols = elements(await report(), 'protocol');
  t.equal(protocols.length, 6, 'sslscan reported all six protocol versions');
  const enabled = protocols.filter((p) => p['enabled'] === '1').map((p) => `${p['type']}${p['version']}`);
  t.same(enabled.sort(), ['tls1.2', 'tls1.3']);
});

t.test('sslscan: every accepted suite is AEAD (GCM, CHACHA20-POLY1305, CCM)', async (t) => {
  const ciphers = elements(await report(), 'cipher');
  t.ok(ciphers.length > 0, 'sslscan found accepted suites');
  for (const c of ciphers) t.match(c['cipher'], /GCM|CHACHA20|CCM/, `${c['sslversion']} ${c['cipher']} is AEAD`);
  const versions = new Set(ciphers.map((c) => c['sslversion']));
  t.same([...versions].sort(), ['TLSv1.2', 'TLSv1.3'], 'suites only under TLS 1.2 and 1.3');
});

t.test('sslscan: renegotiation is not offered', async (t) => {
  const [reneg] = elements(await report(), 'renegotiation');
  t.ok(reneg, 'sslscan tested renegotiation');
  t.equal(reneg?.['supported'], '0', 'renegotiation not supported');
});

t.test('sslscan: TLS 1.2 picks the server\'s suite order (tls.ciphers: ECDHE-ECDSA-AES128-GCM-SHA256 first)', async (t) => {
  const preferred = elements(await report(), 'cipher').find((c) => c['status'] === 'preferred' && c['sslversion'] === 'TLSv1.2');
  // The certificate is ECDSA, so the first configured ECDSA suite is the server's choice.
  t.equal(preferred?.['cipher'], 'ECDHE-ECDSA-AES128-GCM-SHA256');
});

t.test('a client-initiated TLS 1.2 renegotiation is refused; the process is unaffected', async (t) => {
  const outcome = await new Promise<{ renegotiated: boolean; error: string }>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: sc.tlsPort, ca: fs.readFileSync(ca), servername: 'localhost', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] }, () => {
      const started = s.renegotiate({ rejectUnauthorized: true }, (err) => {
        s.destroy();
        resolve({ renegotiated: !err, error: err ? err.message : '' });
      });
      if (!started) resolve({ renegotiated: false, error: 'renegotiate() refused locally' });
    });
    s.on('error', (err: Error) => resolve({ renegotiated: false, error: err.message }));
    s.on('close', () => resolve({ renegotiated: false, error: 'closed' }));
  });
  t.equal(outcome.renegotiated, false, `renegotiation refused (${outcome.error})`);
  t.equal(sc.proc.exitCode, null, 'the sidecar is alive');
});

checkRecovered(t, sc, () => base as Usage, ca, { up });
