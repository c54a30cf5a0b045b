// A WebSocket after the upgrade through the splice pump, the real sidecar on
// real kTLS: once the 101 head is out, upstream → client is a lent TX
// (and client → upstream a lent RX with txrx), as in tcp mode. Text and
// binary echoes up to 4 MiB arrive byte-exact (sha256), the spliced
// counters and the close line show the bytes, the close handshake ends the
// connection, nothing is left open; ktls.splice: false keeps JS pipes.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { metricValue } from '../helpers/metrics.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';
import { closeField, labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';

const MIB = 1024 * 1024;

async function echoes(t: Test, direction: 'tx' | 'txrx', splice: boolean, rxInKernel: boolean): Promise<void> {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, {
    mode: 'http',
    upstream: { url: upstream.url },
    log: { level: 'info', connections: 'all' },
    ktls: { enabled: true, direction, ciphers: ['TLS_AES_128_GCM_SHA256'], splice },
  });
  const counts = async (): Promise<{ out: number; in: number }> => {
    const text = await sc.metrics();
    return { out: metricValue(text, 'ktls_sidecar_bytes_spliced_sent_total', { ktls: 'on' }), in: metricValue(text, 'ktls_sidecar_bytes_spliced_received_total', { ktls: 'on' }) };
  };
  const before = await counts();
  const ws = new WebSocket(`wss://127.0.0.1:${sc.tlsPort}/`, { ca: readFileSync(labPki().caCert), maxPayload: 64 * MIB });
  ws.on('error', () => undefined);
  t.teardown(() => ws.terminate());
  await once(ws, 'open');
  ws.send('hello');
  const [text] = (await once(ws, 'message')) as [Buffer];
  t.equal(text.toString(), 'echo:hello', 'text echo');
  let sent = 0;
  for (const n of [1, 1000, 64 * 1024, 4 * MIB]) {
    const bin = patternBytes(n, n);
    ws.send(bin);
    const [back] = (await once(ws, 'message')) as [Buffer];
    t.equal(sha256(back), sha256(bin), `${n} B binary echo, byte-exact`);
    sent += n;
  }
  const d = await counts();
  if (splice) {
    t.ok(d.out - before.out >= sent, `upstream → client spliced: ${d.out - before.out} B (≥ ${sent} of payload)`);
    if (rxInKernel) t.ok(d.in - before.in >= sent, `client → upstream spliced (txrx): ${d.in - before.in} B`);
    else t.equal(d.in - before.in, 0, 'tx: the client\'s records are decrypted in JS');
  } else {
    t.same([d.out - before.out, d.in - before.in], [0, 0], 'nothing spliced with ktls.splice: false');
  }
  const closed = sc.logs.filter((l) => l.event === 'connection_closed').length;
  ws.close(1000, 'bye');
  const [code] = (await once(ws, 'close')) as [number];
  t.equal(code, 1000, 'close handshake through the splice');
  const line = await sc.waitForLog((l) => l.event === 'connection_closed' && sc.logs.filter((x) => x.event === 'connection_closed').indexOf(l) >= closed, 30_000);
  t.equal(line['ktls'], 'on', 'a kTLS connection');
  if (splice) t.ok(Number(closeField(line, 'bytes_out_spliced')) >= sent, `close line: bytes_out_spliced ${String(closeField(line, 'bytes_out_spliced'))}`);
  else t.equal(closeField(line, 'bytes_out_spliced'), 0, 'close line: nothing spliced');
  t.equal(await sc.metric('ktls_sidecar_connections_active'), 0, 'closed');
}

t.test('WebSocket through the splice pump', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const rx13 = probe.supports('TLSv1.3', 'AES_GCM_128', 'rx') && probe.rekey;
  await t.test('tx', (t) => echoes(t, 'tx', true, false));
  await t.test(`txrx${rx13 ? '' : ' (TLS 1.3 RX stays in JS here)'}`, (t) => echoes(t, 'txrx', true, rx13));
  await t.test('ktls.splice: false', (t) => echoes(t, 'txrx', false, false));
});
