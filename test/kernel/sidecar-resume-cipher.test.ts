// The real sidecar: TLS 1.3 resumption lands on kTLS like a full handshake,
// and a suite outside `ktls.ciphers` stays in userspace with
// ktls_reason="cipher_not_allowed" (still served byte-exact).
import t from 'tap';
import https from 'node:https';
import type tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { curlBase, labPki, labSkip, run, startHttpLabSidecar } from './helpers/sidecar-lab.js';

interface Got {
  status: number;
  body: Buffer;
  reused: boolean;
  session: Buffer | undefined;
}

function get(port: number, path: string, session?: Buffer): Promise<Got> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    let reused = false;
    // `session` reaches tls.connect() (agent: false); https.RequestOptions does not declare it.
    const options: https.RequestOptions & { session?: Buffer } = {
        host: '127.0.0.1',
        port,
        path,
        servername: 'localhost',
        ca: readFileSync(labPki().caCert),
        agent: false,
        minVersion: 'TLSv1.3',
        ciphers: 'TLS_AES_128_GCM_SHA256',
        session,
      };
    const req = https.request(
      options,
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), reused, session: ticket }));
        res.on('error', reject);
      },
    );
    req.on('socket', (s) => {
      const sock = s as tls.TLSSocket;
      sock.on('session', (b: Buffer) => (ticket ??= b));
      sock.once('secureConnect', () => (reused = sock.isSessionReused()));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('resumption and cipher policy', { skip: labSkip }, async (t) => {
  const sc = await startHttpLabSidecar(t, { enabled: true, direction: 'tx', ciphers: ['TLS_AES_128_GCM_SHA256'] });
  const want = sha256(patternBytes(65536, 7));

  await t.test('TLS 1.3 resumption works over kTLS', async (t) => {
    const on = { ktls: 'on', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256' };
    const before = await sc.metric('ktls_sidecar_connections_opened_total', on);
    const first = await get(sc.tlsPort, '/bytes?n=65536');
    t.equal(first.status, 200);
    t.equal(sha256(first.body), want, 'first connection byte-exact');
    t.ok(first.session, 'got a session ticket');
    const second = await get(sc.tlsPort, '/bytes?n=65536', first.session);
    t.ok(second.reused, 'second connection resumed');
    t.equal(sha256(second.body), want, 'resumed connection byte-exact');
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', on)) - before, 2, 'both connections on kTLS');
  });

  await t.test('a suite outside ktls.ciphers stays in userspace (cipher_not_allowed)', async (t) => {
    const labels = { ktls: 'off', ktls_reason: 'cipher_not_allowed', cipher: 'TLS_AES_256_GCM_SHA384' };
    const before = await sc.metric('ktls_sidecar_connections_opened_total', labels);
    const onBefore = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', cipher: 'TLS_AES_256_GCM_SHA384' });
    const r = await run('curl', [...curlBase(sc.tlsPort), '--tlsv1.3', '--tls13-ciphers', 'TLS_AES_256_GCM_SHA384', `https://localhost:${sc.tlsPort}/bytes?n=65536`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(sha256(r.stdout), want, 'served byte-exact in userspace');
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', labels)) - before, 1, 'ktls="off" cipher_not_allowed');
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', cipher: 'TLS_AES_256_GCM_SHA384' })) - onBefore, 0, 'not on kTLS');
  });
});
