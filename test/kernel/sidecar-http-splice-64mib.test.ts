// A 64 MiB HTTP/1.1 response body through the splice pump, sha256-checked,
// every byte spliced: tx on TLS 1.3 AES-128-GCM, txrx on TLS 1.2
// AES-256-GCM where the kernel holds its RX (else TLS 1.3 AES-128-GCM).
import t from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { SUITES, labSkip } from './helpers/sidecar-lab.js';
import { bigBody, startOrigin } from './sidecar-http-splice-lab.js';

t.test('64 MiB response bodies through the splice pump', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  const tls13 = SUITES[0]!;
  const tls12 = SUITES.find((s) => s.version === 'TLSv1.2' && s.kernel === 'AES_GCM_256' && probe.supports(s.version, s.kernel, 'rx'));
  await t.test('tx, TLS 1.3 AES-128-GCM', (t) => bigBody(t, probe, origin, 'tx', tls13));
  await t.test(`txrx, ${(tls12 ?? tls13).iana}`, (t) => bigBody(t, probe, origin, 'txrx', tls12 ?? tls13));
});
