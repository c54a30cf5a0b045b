// The real sidecar (CLI, YAML config) with `ktls.direction: tx`: every suite
// the kernel probe says it can hold, TLS 1.3 and 1.2, through curl — 0 B,
// 1 KiB, 4 MiB downloads and a 1 MiB upload byte-exact on one kTLS
// connection; its labels in /metrics; /proc/net/tls_stat moving.
// Plus one 64 MiB download (first suite).
// See test/kernel/helpers/sidecar-matrix.ts.
import t from 'tap';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { labSkip } from './helpers/sidecar-lab.js';
import { runMatrix } from './helpers/sidecar-matrix.js';

t.test('sidecar matrix, direction tx', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.available, `kernel kTLS available (${probe.reasonDetail ?? 'ok'})`);
  await runMatrix(t, probe, 'tx', true);
});
