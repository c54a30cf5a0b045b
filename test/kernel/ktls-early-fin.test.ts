// The real sidecar (tcp mode) with the client's FIN arriving with its data:
// a relay holds every client byte after the ClientHello until the client's
// FIN, then writes Finished + 1 MiB + FIN in one burst. On 6.1 the FIN often
// lands before TCP_ULP, which then fails with ENOTCONN (install_failed, the
// JS record layer carries the connection); otherwise kTLS TX is on and RX is
// in JS (no rekey) or the kernel. Whatever the path, the echo must be exact:
// the JS RX side used to end the stream at the FIN with records still in its
// reader (the once-in-four sidecar-protocols failure on 6.1).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { sendAndHalfClose, startHoldingRelay } from '../helpers/half-close.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';

t.test('tcp mode: Finished, 1 MiB and FIN in one burst are echoed byte-exact', { skip: labSkip }, async (t) => {
  const ca = readFileSync(labPki().caCert);
  const tcpUp = await startTcpUpstream(false);
  t.teardown(() => tcpUp.close());
  const sc = await startLabSidecar(t, { mode: 'tcp', upstream: { address: `127.0.0.1:${tcpUp.port}` }, ktls: { enabled: true, direction: 'txrx' } });
  const relay = await startHoldingRelay(t, sc.tlsPort);
  const rounds = 4;
  for (let i = 0; i < rounds; i++) {
    const data = patternBytes(1 << 20, 31 + i);
    const got = await sendAndHalfClose(relay, ca, data, { minVersion: 'TLSv1.3' });
    const n = i + 1;
    const line = await sc.waitForLog((l) => l.event === 'connection_closed' && sc.logs.filter((x) => x.event === 'connection_closed').indexOf(l) === i, 30_000).catch(() => undefined);
    t.comment(`round ${i}: received ${got.length} B; close line ${n}: ${JSON.stringify(line ?? null)}`);
    t.equal(got.length, data.length + '<upstream-bye>'.length, `round ${i}: every byte came back once`);
    t.equal(sha256(got.subarray(0, data.length)), sha256(data), `round ${i}: byte-exact`);
  }
});
