// HTTP/1.1 response bodies through the splice pump, the real sidecar on real
// kTLS, ktls.direction tx: every suite the kernel holds, on one keep-alive
// connection per suite mixing spliced and JS bodies (0 B, threshold−1,
// threshold, a HEAD, a chunked body, a body whose first bytes came with the
// head), sha256-checked against the origin; the spliced byte counter
// exact per response (the origin sends the head alone first, so every body
// byte of a spliced response is spliced), bytes_sent_total equal to what the
// client took, the close line agreeing, tls_stat as the oracle; the pooled
// upstream socket reused after spliced bodies; ktls.splice: false keeps JS.
// txrx: -txrx; 64 MiB: -64mib; faults: -faults, -drain; WebSocket: -ws;
// the cases: sidecar-http-splice-lab.ts.
import t from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { SUITES, labSkip } from './helpers/sidecar-lab.js';
import { Client, GAP, T, fetchChecked, runMode, startHttpSidecar, startOrigin, tlsOptions } from './sidecar-http-splice-lab.js';

t.test('HTTP/1.1 response bodies through the splice pump, tx', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  const tls13 = SUITES[0]!;
  await runMode(t, probe, origin, 'tx');
  await t.test('ktls.splice: false keeps bodies in JS', async (t) => {
    const sc = await startHttpSidecar(t, origin, { direction: 'tx', splice: false, spliceMinBody: T });
    const c = await Client.connect(sc.tlsPort, tlsOptions(tls13));
    t.equal(await fetchChecked(t, sc, c, 'GET', `/bytes/${16 * T}?${GAP}`, 16 * T), 0, 'nothing spliced');
    c.destroy();
  });
});
