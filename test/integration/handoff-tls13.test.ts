// TLS 1.3 handoffs against real clients: every connection is served only by
// the production record layer in JS, built from the engine's CryptoInfo.
import t from 'tap';
import { curl, KU_STEPS, makeCerts, nodeHttps, nodeTls, sClient, serverTlsOptions, startServer } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

const CIPHERS = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'] as const;

for (const cipher of CIPHERS) {
  t.test(`s_client ${cipher}: echo, KeyUpdate K/k from the client and one from the server, close_notify`, async (t) => {
    const s = await startServer(serverTlsOptions(certs, 'TLSv1.3', cipher));
    t.teardown(() => s.close());
    const cli = await sClient(s.port, certs, { version: 'TLSv1.3', cipher, steps: KU_STEPS });
    const srv = await s.conn(0);
    t.equal(cli.exit, 0, 's_client exits 0');
    t.same(cli.problems, [], 'no error lines from s_client');
    t.equal(srv.mode, 'handoff');
    t.equal(srv.facts?.cipher, cipher);
    t.equal(srv.txSeq, 2n, 'two NewSessionTickets went out under the application key');
    t.equal(srv.rxSeq, 0n);
    // In: K (update_requested), k, and the client's answer to SRVKU (neither requests one).
    t.equal(srv.stats?.keyUpdatesIn, 3);
    // Out: our answer to K, and SRVKU (update_requested); a misread request flag changes this count.
    t.equal(srv.stats?.keyUpdatesOut, 2);
    t.equal(srv.stats?.closeNotifyIn, true);
    t.equal(srv.error, undefined);
  });
}

t.test('node tls client: 120 KB up / 370 KB down byte-exact, first request right behind the Finished', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.received.length, 2);
  t.equal(srv.stats?.closeNotifyIn, true, 'client end() → close_notify decrypted');
  t.equal(s.engine.stats.bytesDroppedAfterHandoff, 0, 'OpenSSL wrote nothing after the handoff');
});

t.test('curl POST 30 KB / 200 KB response, ALPN and SNI seen before offload()', async (t) => {
  const s = await startServer({ ...serverTlsOptions(certs, 'TLSv1.3'), ALPNProtocols: ['http/1.1'] });
  t.teardown(() => s.close());
  const cli = await curl(s.port, certs, { version: 'TLSv1.3' });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.detail ?? 'curl ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.offloadAsked?.alpn, 'http/1.1');
  t.equal(srv.offloadAsked?.servername, 'localhost');
  t.equal(srv.offloadAsked?.kernelCipher, 'AES_GCM_256');
  t.equal(srv.facts?.alpn, 'http/1.1');
});

t.test('node https POST through the handoff', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const cli = await nodeHttps(s.port, certs);
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? cli.detail ?? 'https ok');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.stats?.closeNotifyOut, true);
});

t.test('s_client TLS_AES_128_CCM_SHA256 (kernel AES_CCM_128; policy decides whether to trust it)', async (t) => {
  const cipher = 'TLS_AES_128_CCM_SHA256';
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3', cipher));
  t.teardown(() => s.close());
  const cli = await sClient(s.port, certs, { version: 'TLSv1.3', cipher, steps: KU_STEPS });
  const srv = await s.conn(0);
  t.equal(cli.exit, 0);
  t.same(cli.problems, []);
  t.equal(srv.offloadAsked?.kernelCipher, 'AES_CCM_128');
  t.equal(srv.mode, 'handoff');
  t.equal(srv.stats?.keyUpdatesIn, 3);
});
