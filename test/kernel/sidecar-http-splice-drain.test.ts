// HTTP/1.1 response bodies through the splice pump and the connection's
// lifetime, the real sidecar on real kTLS: the kTLS flag turning off during a
// spliced body (the response finishes, then the connection ends; with a
// short ktls.drainTimeout it is closed mid-body, nothing left behind), and
// timeouts.idle (a spliced body that moves keeps its connection although no
// byte crosses JS; a client that stops reading is closed).
import t, { type Test } from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { labSkip } from './helpers/sidecar-lab.js';
import { bodyOf, bystander, connect, cutResponse, fdsBack, heldFds, startFaultSidecar, startOrigin, until } from './sidecar-http-splice-lab.js';

const KIB = 1024;
const MIB = 1024 * KIB;

t.test('HTTP splice, the flag and the idle timeout', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  const sc = await startFaultSidecar(t, origin);
  await bystander(sc, MIB);
  await until(() => origin.open() === 0, 10_000);
  const baseline = await heldFds(sc);
  const settled = async (t: Test): Promise<void> => {
    t.ok(await until(async () => (await sc.metric('ktls_sidecar_connections_active')) === 0), 'every client connection closed');
    t.ok(await until(() => origin.open() === 0, 10_000), 'every upstream socket closed');
    const back = await fdsBack(sc, baseline);
    t.ok(back.ok, back.detail);
    t.equal(sc.proc.exitCode, null, 'the sidecar lives');
  };

  await t.test('kTLS flag off during a spliced body: the response finishes, then the connection ends', async (t) => {
    const c = await connect(sc);
    c.send('GET', `/slow/${4 * MIB}?ms=20`);
    const flip: { done?: Promise<void> } = {};
    const got = await c.response('GET', (n) => {
      if (n >= 256 * KIB && !flip.done) flip.done = sc.setKtls(false);
    });
    await flip.done;
    t.equal(got.sha, bodyOf(4 * MIB).sha, 'byte-exact to the end');
    await c.closed();
    t.pass('the connection ended after the response');
    await sc.setKtls(true);
    await settled(t);
  });

  await t.test('timeouts.idle: a spliced body that moves keeps its connection; a client that stops reading is closed', async (t) => {
    const sc3 = await startFaultSidecar(t, origin, {}, { timeouts: { idle: '2s' } });
    const c = await connect(sc3);
    c.send('GET', `/slow/${4 * MIB}?ms=80`);
    const got = await c.response().catch((err: Error) => {
      // What the sidecar said about the connection, for the failure below.
      t.comment(`${err.message}; close lines: ${JSON.stringify(sc3.logs.filter((l) => l.event === 'connection_closed'))}`);
      return null;
    });
    t.equal(got?.sha, bodyOf(4 * MIB).sha, 'a 5 s spliced body, no JS byte for longer than the 2 s idle timeout: complete');
    t.ok((await sc3.metric('ktls_sidecar_bytes_spliced_sent_total')) >= 4 * MIB - 256 * KIB, 'it was spliced');
    c.destroy();
    const stalled = await connect(sc3);
    stalled.send('GET', `/slow/${64 * MIB}?ms=5`);
    stalled.socket.pause();
    const idleClosed = await until(() => sc3.logs.some((l) => l.event === 'connection_closed' && l['close_reason'] === 'idle_timeout'), 20_000);
    if (!idleClosed) t.comment(`close lines: ${JSON.stringify(sc3.logs.filter((l) => l.event === 'connection_closed'))}`);
    t.ok(idleClosed, 'the stalled connection closed: idle_timeout');
    t.ok(await until(async () => (await sc3.metric('ktls_sidecar_connections_active')) === 0), 'no connection left');
    t.ok(await until(() => origin.open() === 0, 10_000), 'the upstream socket closed');
    stalled.destroy();
    await sc3.stop();
  });

  await t.test('kTLS flag off with a short drainTimeout: closed mid-body, nothing left behind', async (t) => {
    const sc2 = await startFaultSidecar(t, origin, { drainTimeout: '500ms', drainOnDisable: 'close' });
    await bystander(sc2, MIB);
    await until(() => origin.open() === 0, 10_000);
    const base2 = await heldFds(sc2);
    const c = await connect(sc2);
    c.send('GET', `/slow/${8 * MIB}?ms=20`);
    const flip: { done?: Promise<void> } = {};
    const got = await cutResponse(c, (n) => {
      if (n >= 256 * KIB && !flip.done) flip.done = sc2.setKtls(false);
    });
    await flip.done;
    t.ok(got < 8 * MIB, `closed by the drain after ${got} bytes`);
    t.ok(await until(async () => (await sc2.metric('ktls_sidecar_connections_active')) === 0), 'closed');
    t.ok(await until(() => origin.open() === 0, 10_000), 'the upstream socket closed');
    const back = await fdsBack(sc2, base2);
    t.ok(back.ok, back.detail);
    // The log is written asynchronously (gathered, flushed periodically): its line can come after the metric scrape.
    const drained = await until(() => sc2.logs.some((l) => l.event === 'connection_closed' && l['close_reason'] === 'ktls_drain'), 10_000);
    if (!drained) t.comment(`close lines: ${JSON.stringify(sc2.logs.filter((l) => l.event === 'connection_closed'))}`);
    t.ok(drained, 'close_reason ktls_drain');
    t.equal(sc2.proc.exitCode, null, 'the sidecar lives');
    await sc2.stop();
  });
});
