// HTTP/1.1 response bodies through the splice pump, ktls.direction txrx (the
// client's records decrypted by the kernel too, where it holds that RX): the
// cases of sidecar-http-splice.test.ts for every suite.
import t from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { labSkip } from './helpers/sidecar-lab.js';
import { runMode, startOrigin } from './sidecar-http-splice-lab.js';

t.test('HTTP/1.1 response bodies through the splice pump, txrx', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  await runMode(t, probe, origin, 'txrx');
});
