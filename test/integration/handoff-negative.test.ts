// Negative controls: corrupt one field of the handed-off state and a real
// peer MUST reject the connection (proves the peers check what we derive),
// and handshake failures reject with the right reason label.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import type { HandoffResult } from '../../proxy/handshake/engine.js';
import { makeCerts, nodeTls, serverTlsOptions, startServer } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

type Mutation = [name: string, version: 'TLSv1.2' | 'TLSv1.3', cipher: string, mutate: (h: HandoffResult) => void, who: 'client' | 'server'];

const MUTATIONS: Mutation[] = [
  ['TLS 1.3 TX seq - 2 (tickets not counted)', 'TLSv1.3', 'TLS_AES_128_GCM_SHA256', (h) => { h.tx.recSeq -= 2n; }, 'client'],
  ['TLS 1.3 TX seq + 1', 'TLSv1.3', 'TLS_CHACHA20_POLY1305_SHA256', (h) => { h.tx.recSeq += 1n; }, 'client'],
  ['TLS 1.3 RX seq + 1', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', (h) => { h.rx.recSeq += 1n; }, 'server'],
  ['TLS 1.2 GCM TX seq + 1', 'TLSv1.2', 'ECDHE-RSA-AES128-GCM-SHA256', (h) => { h.tx.recSeq += 1n; }, 'client'],
  ['TLS 1.2 GCM TX salt bit flip', 'TLSv1.2', 'AES128-GCM-SHA256', (h) => { h.tx.salt[0] = (h.tx.salt[0] ?? 0) ^ 1; }, 'client'],
  ['TLS 1.2 ChaCha20 TX seq + 1', 'TLSv1.2', 'ECDHE-RSA-CHACHA20-POLY1305', (h) => { h.tx.recSeq += 1n; }, 'client'],
  ['TLS 1.2 GCM RX seq - 1', 'TLSv1.2', 'ECDHE-RSA-AES256-GCM-SHA384', (h) => { h.rx.recSeq -= 1n; }, 'server'],
];

for (const [name, version, cipher, mutate, who] of MUTATIONS) {
  t.test(`negative control: ${name} breaks the connection (${who} rejects)`, async (t) => {
    const s = await startServer(serverTlsOptions(certs, version, cipher), { mutate });
    t.teardown(() => s.close());
    const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: version, maxVersion: version }, reqs: [[100, 100]], timeoutMs: 8000 });
    const srv = await s.conn(0, 8000);
    t.notOk(cli.ok, 'the client did not get a valid response');
    if (who === 'client') t.match(cli.error ?? '', /decrypt|bad record mac|cipher operation failed/i, `client: ${cli.error}`);
    else t.match(srv.error ?? '', /failed authentication/, `server: ${srv.error}`);
  });
}

/** Connect raw TCP, write `bytes`, optionally end, and wait for the server's verdict. */
async function rawClient(port: number, bytes: Buffer, end: boolean): Promise<void> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  c.write(bytes);
  if (end) c.end();
  c.resume();
  await new Promise((r) => c.on('close', r));
}

t.test('plain HTTP on the TLS port → reason protocol_error, code ERR_KTLS_SIDECAR_NOT_TLS', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  await rawClient(s.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), false);
  const srv = await s.conn(0);
  t.equal(srv.failure?.reason, 'protocol_error');
  t.equal(srv.failure?.code, 'ERR_KTLS_SIDECAR_NOT_TLS');
});

t.test('no common cipher → reason no_shared_cipher', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2', 'ECDHE-RSA-AES128-GCM-SHA256'));
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' } });
  const srv = await s.conn(0);
  t.notOk(cli.ok);
  t.equal(srv.failure?.reason, 'no_shared_cipher');
});

t.test('client that only speaks TLS 1.2 to a TLS 1.3-only server → reason protocol_version', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2' } });
  const srv = await s.conn(0);
  t.equal(srv.failure?.reason, 'protocol_version');
});

t.test('client that rejects the server certificate (alert unknown_ca) → reason peer_alert', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  // No trust store: s_client cannot verify our test CA and, with -verify_return_error, aborts with an alert.
  const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${s.port}`, '-tls1_3', '-verify_return_error', '-no-CAfile', '-no-CApath', '-no-CAstore'],
    { stdio: ['ignore', 'ignore', 'ignore'] });
  const exit = await new Promise<number | null>((r) => p.on('exit', r));
  const srv = await s.conn(0);
  t.not(exit, 0);
  t.equal(srv.failure?.reason, 'peer_alert');
});

t.test('silent client → reason timeout after handshakeTimeoutMs', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'), { engine: { handshakeTimeoutMs: 300 } });
  t.teardown(() => s.close());
  const c = net.connect(s.port, '127.0.0.1');
  c.on('error', () => {});
  const srv = await s.conn(0);
  c.destroy();
  t.equal(srv.failure?.reason, 'timeout');
});

t.test('client closing mid-ClientHello → reason reset', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const hello = await captureClientHello();
  await rawClient(s.port, hello.subarray(0, 40), true);
  const srv = await s.conn(0);
  t.equal(srv.failure?.reason, 'reset');
});

async function captureClientHello(): Promise<Buffer> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const got = new Promise<Buffer>((resolve) => srv.on('connection', (s) => s.once('data', (d: Buffer) => { resolve(d); s.destroy(); })));
  const c = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1' });
  c.on('error', () => {});
  const hello = await got;
  c.destroy();
  srv.close();
  return hello;
}

/** A client certificate of ~50 KB (1800 SAN entries): its handshake flight alone is over 32 KiB. */
function bigClientCert(): { key: Buffer; cert: Buffer } {
  const dir = certs.dir;
  const san = Array.from({ length: 1800 }, (_, i) => `DNS:host-${i}.example.test`).join(',');
  fs.writeFileSync(certs.file('big.cnf'), `[big]\nextendedKeyUsage=clientAuth\nsubjectAltName=${san}\n`);
  const run = (...a: string[]): void => { execFileSync('openssl', a, { cwd: dir, stdio: 'ignore' }); };
  run('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'big.key', '-out', 'big.csr', '-subj', '/CN=big');
  run('x509', '-req', '-in', 'big.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'big.pem', '-days', '1',
    '-extfile', 'big.cnf', '-extensions', 'big');
  return { key: fs.readFileSync(certs.file('big.key')), cert: fs.readFileSync(certs.file('big.pem')) };
}

const big = bigClientCert();
const mtls = { ...serverTlsOptions(certs, 'TLSv1.3'), requestCert: true, rejectUnauthorized: true, ca: certs.ca };

t.test('client handshake flight over maxBufferedBytes (50 KB certificate, 32 KiB budget) → reason handshake_buffer_limit', async (t) => {
  const s = await startServer(mtls, { engine: { maxBufferedBytes: 32 * 1024 } });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3', ...big } });
  const srv = await s.conn(0);
  t.notOk(cli.ok);
  t.equal(srv.failure?.reason, 'handshake_buffer_limit');
  t.equal(srv.failure?.code, 'ERR_KTLS_SIDECAR_LIMIT');
});

t.test('the same 50 KB certificate within a 256 KiB budget hands off normally', async (t) => {
  const s = await startServer(mtls, { engine: { maxBufferedBytes: 256 * 1024 } });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3', ...big } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.facts?.authorized, true);
});
