// Handshake shapes the engine must follow exactly: client certificates,
// HelloRetryRequest, client data coalesced with or pipelined behind the
// Finished, and records split over 7-byte TCP segments.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { gen, KU_STEPS, makeCerts, sha256, nodeTls, sClient, serverTlsOptions, startServer } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`${version} client certificate: authorized, peer certificate summary for XFCC`, async (t) => {
    const s = await startServer({ ...serverTlsOptions(certs, version), requestCert: true, rejectUnauthorized: true, ca: certs.ca });
    t.teardown(() => s.close());
    const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: version, maxVersion: version, key: certs.clientKey, cert: certs.clientCert } });
    const srv = await s.conn(0);
    t.ok(cli.ok, cli.error ?? 'client ok');
    t.equal(srv.mode, 'handoff');
    t.equal(srv.facts?.authorized, true);
    t.match(srv.facts?.peerCertificate?.subject ?? '', /CN=test-client/);
    t.match(srv.facts?.peerCertificate?.issuer ?? '', /CN=handoff test CA/);
    t.match(srv.facts?.peerCertificate?.pem ?? '', /^-----BEGIN CERTIFICATE-----/);
    t.match(srv.facts?.peerCertificate?.sha256 ?? '', /^[0-9a-f]{64}$/);
  });
}

t.test('client without the required certificate: rejected with reason client_cert_required', async (t) => {
  const s = await startServer({ ...serverTlsOptions(certs, 'TLSv1.3'), requestCert: true, rejectUnauthorized: true, ca: certs.ca });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' } });
  const srv = await s.conn(0);
  t.notOk(cli.ok);
  t.equal(srv.mode, 'failed');
  t.equal(srv.failure?.reason, 'client_cert_required');
  t.equal(srv.failure?.code, 'ERR_KTLS_SIDECAR_HANDSHAKE');
});

t.test('HelloRetryRequest (server P-384 only, client offers X25519 first) with s_client and KeyUpdates', async (t) => {
  const s = await startServer({ ...serverTlsOptions(certs, 'TLSv1.3'), ecdhCurve: 'P-384' });
  t.teardown(() => s.close());
  const cli = await sClient(s.port, certs, { version: 'TLSv1.3', args: ['-groups', 'X25519:P-384'], steps: KU_STEPS });
  const srv = await s.conn(0);
  t.equal(cli.exit, 0);
  t.same(cli.problems, []);
  t.equal(srv.facts?.helloRetryRequest, true);
  t.equal(srv.mode, 'handoff');
  t.equal(srv.stats?.keyUpdatesIn, 3);
});

t.test('TLS 1.3 first request coalesced with the client Finished is in leftover and decrypts', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' }, reqs: [[20_000, 1000], [10, 10]] });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.ok((srv.leftoverBytes ?? 0) > 0, `leftover ${srv.leftoverBytes} B`);
  t.equal(srv.received.length, 2);
});

t.test('client pipelining 4 MiB behind its Finished: reading stops at the Finished, bounded leftover, nothing lost', async (t) => {
  const maxBufferedBytes = 64 * 1024;
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'), { engine: { maxBufferedBytes } });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' }, reqs: [[4 * 1024 * 1024, 1000]], timeoutMs: 20_000 });
  const srv = await s.conn(0, 20_000);
  t.ok(cli.ok, cli.error ?? 'client ok: the server saw the exact 4 MiB (sha256)');
  t.equal(srv.mode, 'handoff');
  const bound = maxBufferedBytes + 64 * 1024 + 64 * 1024;
  t.ok((srv.leftoverBytes ?? Infinity) <= bound, `leftover ${srv.leftoverBytes} B ≤ ${bound} B`);
  t.equal(srv.received.length, 1);
  t.comment(`drained from the socket's stream buffer at the stop: ${srv.facts?.counts.drainedAtStop} B`);
});

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`${version} client writing 7-byte TCP segments: records reassembled, partial leftover handled`, async (t) => {
    const s = await startServer(serverTlsOptions(certs, version));
    t.teardown(() => s.close());
    const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: version, maxVersion: version }, drip: 7, reqs: [[300, 30_000], [10, 10]], timeoutMs: 20_000 });
    const srv = await s.conn(0, 20_000);
    t.ok(cli.ok, cli.error ?? 'client ok');
    t.equal(srv.mode, 'handoff');
    t.equal(srv.received.length, 2);
  });
}

/**
 * A session that allows 0-RTT (max_early_data 16384) from `openssl s_server
 * -early_data`: Node never issues such tickets, so this is how a real client
 * is made to send early data to our server, which cannot accept the PSK.
 */
async function earlyDataSession(): Promise<string> {
  const srv = spawn('openssl', ['s_server', '-accept', '127.0.0.1:0', '-cert', certs.file('server-ec.pem'), '-key', certs.file('server-ec.key'),
    '-early_data', '-tls1_3', '-naccept', '1'], { stdio: ['pipe', 'pipe', 'ignore'] }); // stdin kept open: EOF would end its session
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      srv.stdout.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        const m = /ACCEPT 127\.0\.0\.1:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      srv.on('exit', () => reject(new Error('s_server exited')));
    });
    const sess = certs.file('early.sess');
    const cli = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', certs.file('ca.pem'), '-tls1_3', '-sess_out', sess,
      '-quiet', '-no_ign_eof'], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const text = fs.existsSync(sess) ? execFileSync('openssl', ['sess_id', '-in', sess, '-text', '-noout'], { encoding: 'latin1' }) : '';
        if (/Max Early Data: [1-9]/.test(text)) return sess;
        if (Date.now() > deadline) throw new Error('no 0-RTT ticket from s_server');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      cli.kill();
    }
  } finally {
    srv.kill();
  }
}

t.test('rejected 0-RTT: the client\'s early data records are skipped, the handoff state stays exact', async (t) => {
  const sess = await earlyDataSession();
  const early = certs.file('early.txt');
  fs.writeFileSync(early, 'EARLY-DATA-LINE\n'.repeat(20));
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const cli = await sClient(s.port, certs, { version: 'TLSv1.3', args: ['-sess_in', sess, '-early_data', early], steps: KU_STEPS });
  const srv = await s.conn(0);
  t.equal(cli.exit, 0);
  t.same(cli.problems, []);
  t.ok((srv.facts?.counts.earlyDataRecordsSkipped ?? 0) > 0, `early data records skipped: ${srv.facts?.counts.earlyDataRecordsSkipped}`);
  t.equal(srv.facts?.resumed, false);
  t.equal(srv.stats?.keyUpdatesIn, 3);
});

t.test('client sending its request, close_notify and FIN right behind its Finished gets the full response', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const body = gen(5000, 'half-close');
  const reply = await new Promise<Buffer>((resolve, reject) => {
    const c = tls.connect({ port: s.port, host: '127.0.0.1', servername: 'localhost', ca: certs.ca });
    const chunks: Buffer[] = [];
    c.on('secureConnect', () => c.end(Buffer.concat([Buffer.from('REQ 5000 3000\n'), body])));
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('end', () => resolve(Buffer.concat(chunks)));
    c.on('error', reject);
  });
  const srv = await s.conn(0);
  const h = sha256(body);
  t.ok(reply.equals(Buffer.concat([Buffer.from(`RES ${h} 3000\n`), gen(3000, h)])), 'response byte-exact');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.stats?.closeNotifyIn, true);
  t.equal(srv.stats?.closeNotifyOut, true);
});
