// Issue 8 (item 0): on a kTLS-capable host, `ktls.enabled` turned off again
// and again under six mixed-suite 8 MiB HTTP/2 downloads killed the sidecar
// with ERR_INTERNAL_ASSERTION at JSStreamSocket.doWrite (nodejs/node#35384):
// every engine connection that ended in userspace stayed on Node's TLSSocket
// over a JS Duplex, which asserts when OpenSSL writes while a shutdown of the
// Duplex is pending. On this host (engine forced by the "kTLS available"
// probe of test/helpers/engine-sidecar.ts) the old code died within seconds
// of the slow-reading, aborting ChaCha20 clients below (cipher_not_allowed →
// TLSSocket over the Duplex). Now those connections run in the JS record
// layer (RecordLayerStream, both sides in JS): the process stays up, the
// listener keeps accepting, every complete body is byte-exact.
import fs from 'node:fs';
import http2 from 'node:http2';
import t from 'tap';
import { request } from '../helpers/client.js';
import { startEngineSidecar } from '../helpers/engine-sidecar.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { makePki } from '../helpers/pki.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';

const skip = skipUnlessKtlsLess('the lab runs the same load on a real kTLS kernel');

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);

const BODY = 8 << 20;
const EXPECTED = sha256(patternBytes(BODY, 7)); // what the upstream's /bytes sends

/** The client suites of the lab run: AES-GCM (allowed by the default ktls.ciphers) and ChaCha20 (not allowed). */
const SUITES: ReadonlyArray<{ name: string; opts: http2.SecureClientSessionOptions }> = [
  { name: 'TLSv1.3 AES_128_GCM', opts: { minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' } },
  { name: 'TLSv1.3 CHACHA20', opts: { minVersion: 'TLSv1.3', ciphers: 'TLS_CHACHA20_POLY1305_SHA256' } },
  { name: 'TLSv1.3 AES_256_GCM', opts: { minVersion: 'TLSv1.3', ciphers: 'TLS_AES_256_GCM_SHA384' } },
  { name: 'TLSv1.2 AES_256_GCM', opts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384' } },
  { name: 'TLSv1.2 CHACHA20', opts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' } },
  { name: 'TLSv1.2 AES_128_GCM', opts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' } },
];

/** One h2 GET of the 8 MiB body; resolves with its sha256 (or the error). */
function download(port: number, opts: http2.SecureClientSessionOptions): Promise<string> {
  return new Promise((resolve) => {
    const c = http2.connect(`https://localhost:${port}`, { ca, ...opts });
    c.on('error', (e: Error) => resolve(`session error: ${e.message}`));
    const req = c.request({ ':path': `/bytes?n=${BODY}` });
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      c.close();
      resolve(sha256(Buffer.concat(chunks)));
    });
    req.on('error', (e: Error) => resolve(`stream error: ${e.message}`));
  });
}

/**
 * A ChaCha20 h2 client that reads slowly (2 ms pause per chunk, so the
 * sidecar's side backs up) and tears the connection down somewhere in the
 * body: the pattern that reliably hit the assertion on the old code.
 */
function slowAbort(port: number, seed: number): Promise<void> {
  return new Promise((resolve) => {
    const c = http2.connect(`https://localhost:${port}`, { ca, ciphers: 'TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-CHACHA20-POLY1305', ...(seed % 2 ? { maxVersion: 'TLSv1.2' } : {}) });
    c.on('error', () => resolve());
    const req = c.request({ ':path': `/bytes?n=${2 << 20}` });
    const abortAt = 128 * 1024 * (1 + (seed % 15));
    let got = 0;
    req.on('data', (d: Buffer) => {
      got += d.length;
      if (got > abortAt) {
        c.destroy();
        resolve();
        return;
      }
      req.pause();
      setTimeout(() => req.resume(), 2);
    });
    req.on('end', () => {
      c.close();
      resolve();
    });
    req.on('error', () => resolve());
  });
}

t.test('flag flipped under mixed-suite 8 MiB h2 downloads and aborting slow readers: process up, bodies exact', { skip }, async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const sc = await startEngineSidecar(t, ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url]);
  let flips = 0;
  const flipper = setInterval(() => {
    sc.flag.set(!sc.flag.enabled, 'admin');
    flips++;
  }, 5);
  t.teardown(() => clearInterval(flipper));

  const rounds = 3;
  const results: Array<{ name: string; sha: string }> = [];
  let aborted = 0;
  for (let r = 0; r < rounds; r++) {
    let downloading = true;
    const full = Promise.all(SUITES.map(async (s) => ({ name: s.name, sha: await download(sc.port, s.opts) })));
    // Waves of six aborting slow readers for as long as the downloads run (bounded).
    const aborts = (async () => {
      for (let wave = 0; downloading && wave < 40; wave++) {
        await Promise.all(Array.from({ length: 6 }, (_, i) => slowAbort(sc.port, wave * 6 + i)));
        aborted += 6;
      }
    })();
    results.push(...(await full));
    downloading = false;
    await aborts;
  }
  t.comment(`${aborted} slow readers aborted mid-body`);
  clearInterval(flipper);
  t.ok(flips > 10, `the flag flipped ${flips} times during the load`);
  for (const r of results) t.equal(r.sha, EXPECTED, `${r.name}: 8 MiB byte-exact`);

  // Still serving: a fresh connection through the engine (flag on) works.
  sc.flag.set(true, 'admin');
  const after = await request(sc.port, { path: '/', ca: pki.caCert });
  t.equal(after.status, 200, 'the listener still accepts and serves');

  const closed = sc.lines.filter((l) => l.event === 'connection_closed' && l['protocol'] !== 'none');
  const info = (l: (typeof closed)[number]): Record<string, unknown> => (l['ktls_info'] ?? {}) as Record<string, unknown>;
  const onDuplex = closed.filter((l) => info(l)['engine_fallback'] !== undefined);
  t.same(onDuplex, [], 'no connection stayed on the TLSSocket over the engine Duplex');
  const chacha = closed.filter((l) => String(l['cipher']).includes('CHACHA20') && l['ktls_reason'] === 'cipher_not_allowed');
  t.ok(chacha.length > 0, `${chacha.length} ChaCha20 connections declined by ktls.ciphers`);
  t.same(chacha.filter((l) => info(l)['record_layer'] !== 'js'), [], 'every one served by the JS record layer');
  const midFlip = closed.filter((l) => l['ktls_reason'] === 'flag_off' && info(l)['record_layer'] === 'js');
  t.comment(`flag turned off mid-handshake: ${midFlip.length} connection(s) in the JS record layer`);
  const fast = closed.filter((l) => l['ktls_reason'] === 'flag_off' && info(l)['record_layer'] === 'userspace');
  t.comment(`flag off before the handshake: ${fast.length} connection(s) on the native TLSSocket`);
});
