// HTTP/1.1 response bodies through the splice pump when things go wrong
// mid-body, the real sidecar on real kTLS: the upstream resets or ends early
// (counted once as an upstream reset, the client's connection cut: the head
// is out), the client resets (no upstream error, the upstream socket
// dropped); after each: every connection closed, the fds back to the
// baseline, the sidecar alive and a bystander's body byte-exact. Pipelined
// requests keep their order around spliced bodies. The flag and the idle
// timeout: sidecar-http-splice-drain.test.ts.
import t, { type Test } from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { labSkip } from './helpers/sidecar-lab.js';
import { GAP, bodyOf, bystander, connect, cutResponse, fdsBack, heldFds, startFaultSidecar, startOrigin, until } from './sidecar-http-splice-lab.js';

const KIB = 1024;
const MIB = 1024 * KIB;

t.test('HTTP splice under faults', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  const sc = await startFaultSidecar(t, origin);
  const metric = (name: string, labels: Record<string, string> = {}): Promise<number> => sc.metric(`ktls_sidecar_${name}`, labels);
  const closeLines = (): Array<Record<string, unknown>> => sc.logs.filter((l) => l.event === 'connection_closed');

  // Idle upstream sockets expire (4 s): the baseline holds none; pooled pipes are not counted (heldFds).
  await Promise.all([bystander(sc, MIB), bystander(sc, MIB)]);
  await until(() => origin.open() === 0, 10_000);
  const baseline = await heldFds(sc);
  const settled = async (t: Test): Promise<void> => {
    t.ok(await until(async () => (await metric('connections_active')) === 0), 'every client connection closed');
    t.ok(await until(() => origin.open() === 0, 10_000), 'every upstream socket closed');
    const back = await fdsBack(sc, baseline);
    t.ok(back.ok, back.detail);
    t.equal(sc.proc.exitCode, null, 'the sidecar lives');
  };

  for (const kind of ['rst', 'fin'] as const) {
    await t.test(`upstream ${kind === 'rst' ? 'RST' : 'FIN'} mid-body`, async (t) => {
      const reset = await metric('upstream_errors_total', { reason: 'reset' });
      const spliced = await metric('bytes_spliced_sent_total');
      const from = closeLines().length;
      const c = await connect(sc);
      c.send('GET', `/${kind}/${4 * MIB}`);
      const other = bystander(sc, 4 * MIB);
      const got = await cutResponse(c);
      // A FIN comes after every byte sent before it; a RST makes the kernel drop what the sidecar had not read yet.
      if (kind === 'fin') t.equal(got, 2 * MIB, 'cut after every byte the upstream sent');
      else t.ok(got > 0 && got <= 2 * MIB, `cut after ${got} of the ${2 * MIB} the upstream sent before its RST`);
      t.ok(await other, 'another connection meanwhile: byte-exact');
      await settled(t);
      t.equal((await metric('upstream_errors_total', { reason: 'reset' })) - reset, 1, 'one upstream reset');
      t.ok((await metric('bytes_spliced_sent_total')) - spliced >= MIB, 'the body was being spliced');
      // The log is asynchronous: wait for the line rather than read it right after the scrape.
      const line = await until(() => closeLines().slice(from).some((l) => l['close_reason'] === 'upstream_error'), 10_000);
      if (!line) t.comment(`close lines: ${JSON.stringify(closeLines().slice(from))}`);
      t.ok(line, 'close_reason upstream_error');
      c.destroy();
    });
  }

  await t.test('client RST mid-body', async (t) => {
    const errors = await metric('upstream_errors_total');
    const c = await connect(sc);
    c.send('GET', `/slow/${8 * MIB}?ms=20`);
    const other = bystander(sc, 4 * MIB);
    const got = await cutResponse(c, (n) => {
      if (n >= 512 * KIB) c.reset();
    });
    t.ok(got >= 512 * KIB && got < 8 * MIB, `reset after ${got} bytes`);
    t.ok(await other, 'another connection meanwhile: byte-exact');
    await settled(t);
    t.equal((await metric('upstream_errors_total')) - errors, 0, 'not an upstream error');
  });

  await t.test('pipelined requests around spliced bodies stay in order', async (t) => {
    const c = await connect(sc);
    c.socket.write(`GET /bytes/${MIB}?${GAP} HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/${MIB}?${GAP}&seed=5 HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/${2 * MIB}?seed=9 HTTP/1.1\r\nHost: a\r\n\r\n`);
    for (const [n, seed] of [[MIB, 7], [10, 7], [MIB, 5], [2 * MIB, 9]] as const) {
      const r = await c.response();
      t.equal(r.bytes, n);
      t.equal(r.sha, bodyOf(n, seed).sha, `${n} B (seed ${seed}) in its turn, byte-exact`);
    }
    c.destroy();
    await settled(t);
  });

});
