// TLS 1.2 handoffs against real clients, plus the userspace fallback for a
// suite the kernel cannot hold.
import t from 'tap';
import { curl, makeCerts, nodeTls, PLAIN_STEPS, sClient, serverTlsOptions, startServer } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

const CIPHERS = ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305', 'AES128-GCM-SHA256', 'ECDHE-ECDSA-AES128-CCM'];

for (const cipher of CIPHERS) {
  t.test(`s_client ${cipher}: echo incl. a 12 KB line, close_notify, seq 1/1`, async (t) => {
    const s = await startServer(serverTlsOptions(certs, 'TLSv1.2', cipher));
    t.teardown(() => s.close());
    const cli = await sClient(s.port, certs, { version: 'TLSv1.2', cipher, steps: PLAIN_STEPS });
    const srv = await s.conn(0);
    t.equal(cli.exit, 0);
    t.same(cli.problems, []);
    t.equal(srv.mode, 'handoff');
    t.equal(srv.facts?.cipher, cipher);
    t.equal(srv.txSeq, 1n, 'server Finished was the only record under server_write_key');
    t.equal(srv.rxSeq, 1n, 'client Finished was the only record under client_write_key');
    t.equal(srv.stats?.closeNotifyIn, true);
    t.equal(srv.error, undefined);
  });
}

t.test('node tls client ECDHE-RSA-AES256-GCM-SHA384: 120 KB up / 370 KB down byte-exact', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2', 'ECDHE-RSA-AES256-GCM-SHA384'));
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2' } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.received.length, 2);
});

t.test('curl TLS 1.2 ChaCha20 POST 30 KB / 200 KB', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2', 'ECDHE-ECDSA-CHACHA20-POLY1305'));
  t.teardown(() => s.close());
  const cli = await curl(s.port, certs, { version: 'TLSv1.2', cipher: 'ECDHE-ECDSA-CHACHA20-POLY1305' });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.detail ?? 'curl ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.facts?.kernelCipher, 'CHACHA20_POLY1305');
});

t.test('a CBC suite stays on the TLSSocket with reason cipher_not_offloadable, offload() not asked', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2', 'ECDHE-RSA-AES128-SHA256'));
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA256' } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.equal(srv.mode, 'userspace');
  t.equal(srv.reason, 'cipher_not_offloadable');
  t.equal(srv.offloadAsked, undefined);
  t.equal(srv.facts?.cipher, 'ECDHE-RSA-AES128-SHA256');
  t.equal(srv.facts?.kernelCipher, null);
  t.equal(srv.received.length, 2, 'both requests served by Node TLS');
});

// The answer of offload() no longer keeps a connection on the TLSSocket over
// the engine's Duplex (nodejs/node#35384: Node's TLS over a JS stream can end
// the process): with an exact state the engine always hands off, and the
// answer rides on the hand-off for the caller (kernel, or its JS record layer).
for (const [name, offload] of [['returning false', () => false], ['throwing', () => { throw new Error('hook bug'); }]] as const) {
  t.test(`offload() ${name} still hands off, with offload=false`, async (t) => {
    const answers: boolean[] = [];
    const s = await startServer(serverTlsOptions(certs, 'TLSv1.2'), { offload, mutate: (h) => answers.push(h.offload) });
    t.teardown(() => s.close());
    const cli = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2' } });
    const srv = await s.conn(0);
    t.ok(cli.ok, cli.error ?? 'client ok');
    t.equal(srv.mode, 'handoff', 'handed off, not left on the TLSSocket');
    t.same(answers, [false], 'the hand-off says the keys stay out of the kernel');
    t.equal(srv.offloadAsked?.tlsVersion, 'TLSv1.2');
    t.equal(srv.received.length, 2, 'both requests served from the handed-off state');
  });
}

t.test('offload() returning true hands off with offload=true', async (t) => {
  const answers: boolean[] = [];
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2'), { offload: () => true, mutate: (h) => answers.push(h.offload) });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2' } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.equal(srv.mode, 'handoff');
  t.same(answers, [true]);
});
