// Session resumption: the TX sequence number follows what OpenSSL really
// sent (TLS 1.3 PSK: no tickets → 0), and tickets issued through the
// engine-managed newSession store reach the client before the handoff.
import t from 'tap';
import { KU_STEPS, makeCerts, nodeTls, PLAIN_STEPS, sClient, serverTlsOptions, startServer } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

t.test('TLS 1.3 PSK resumption (node client): resumed, TX seq 0 (no tickets after PSK), data byte-exact', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const first = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' } });
  const srv1 = await s.conn(0);
  t.ok(first.session, 'first connection got a ticket');
  t.equal(srv1.txSeq, 2n);
  const second = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3', ...(first.session ? { session: first.session } : {}) } });
  const srv2 = await s.conn(1);
  t.ok(second.ok, second.error ?? 'client ok');
  t.equal(second.resumed, true);
  t.equal(srv2.offloadAsked?.resumed, true, 'offload() knew it was a resumption');
  t.equal(srv2.facts?.resumed, true);
  t.equal(srv2.txSeq, 0n);
});

t.test('TLS 1.3 PSK resumption (s_client -sess_in) with KeyUpdates after the handoff', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'));
  t.teardown(() => s.close());
  const sess = certs.file('sess13.pem');
  await sClient(s.port, certs, { version: 'TLSv1.3', args: ['-sess_out', sess], steps: PLAIN_STEPS });
  await s.conn(0);
  const cli = await sClient(s.port, certs, { version: 'TLSv1.3', args: ['-sess_in', sess], steps: KU_STEPS });
  const srv = await s.conn(1);
  t.equal(cli.exit, 0);
  t.same(cli.problems, []);
  t.equal(srv.facts?.resumed, true);
  t.equal(srv.txSeq, 0n);
  t.equal(srv.stats?.keyUpdatesIn, 3);
});

t.test('TLS 1.2 ticket resumption (node client): abbreviated handshake, first request rides with the Finished', async (t) => {
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2'));
  t.teardown(() => s.close());
  const first = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2' } });
  await s.conn(0);
  t.ok(first.session);
  const second = await nodeTls(s.port, certs, { tlsOpts: { maxVersion: 'TLSv1.2', ...(first.session ? { session: first.session } : {}) } });
  const srv = await s.conn(1);
  t.ok(second.ok, second.error ?? 'client ok');
  t.equal(srv.offloadAsked?.resumed, true);
  t.equal(srv.facts?.resumed, true);
  t.equal(srv.txSeq, 1n);
  t.equal(srv.rxSeq, 1n);
  t.ok((srv.leftoverBytes ?? 0) > 0, `client data read with its Finished (${srv.leftoverBytes} B leftover)`);
});

t.test('TLS 1.3 tickets through the engine-managed newSession store reach the client before the handoff', async (t) => {
  const store = new Map<string, Buffer>();
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.3'), {
    engine: { newSession: (id, data, done) => { store.set(id.toString('hex'), data); setTimeout(done, 20); } },
  });
  t.teardown(() => s.close());
  const cli = await nodeTls(s.port, certs, { tlsOpts: { minVersion: 'TLSv1.3' } });
  const srv = await s.conn(0);
  t.ok(cli.ok, cli.error ?? 'client ok');
  t.ok(cli.session, 'client received a ticket');
  t.ok(store.size > 0, 'the store saw the session');
  t.equal(srv.txSeq, 2n, 'both tickets counted in TX');
});

t.test('TLS 1.2 session-ID resumption through async resumeSession/newSession (OpenSSL pauses mid-handshake)', async (t) => {
  const cache = new Map<string, Buffer>();
  const s = await startServer(serverTlsOptions(certs, 'TLSv1.2'), {
    engine: { newSession: (id, data, done) => { cache.set(id.toString('hex'), data); setTimeout(done, 5); } },
    onTlsServer: (srv) => srv.on('resumeSession', (id: Buffer, cb: (err: Error | null, data: Buffer | null) => void) => {
      setTimeout(() => cb(null, cache.get(id.toString('hex')) ?? null), 5);
    }),
  });
  t.teardown(() => s.close());
  const sess = certs.file('sessid.pem');
  await sClient(s.port, certs, { version: 'TLSv1.2', args: ['-no_ticket', '-sess_out', sess], steps: PLAIN_STEPS });
  await s.conn(0);
  const cli = await sClient(s.port, certs, { version: 'TLSv1.2', args: ['-no_ticket', '-sess_in', sess], steps: PLAIN_STEPS });
  const srv = await s.conn(1);
  t.equal(cli.exit, 0);
  t.same(cli.problems, []);
  t.equal(srv.facts?.resumed, true);
  t.equal(srv.mode, 'handoff');
  t.equal(srv.stats?.closeNotifyIn, true);
});
