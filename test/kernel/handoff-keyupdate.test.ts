// TLS 1.3 KeyUpdate on real kTLS connections (kernel lab VM), driven by
// `openssl s_client`'s interactive `K` (update_requested) and `k`
// (update_not_requested). The decision is the real one, fed by the real
// kernel probe, so each kernel line shows its policy:
//   7.x (rekey): txrx; K and k are followed in the kernel (TLS_RX/TLS_TX set again).
//   6.1 (no rekey): tx with reason rekey_unsupported; k is followed in JS RX;
//     K cannot be answered (TX rekey impossible) → graceful close_notify.
//   6.1 with forceTls13Rx: txrx; any KeyUpdate → graceful close.
import t from 'tap';
import { decide } from '../../proxy/ktls/decision.js';
import { DEFAULT_KTLS_CIPHERS } from '../../proxy/ktls/cipher-policy.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import type { KernelProbe } from '../../proxy/ktls/probe.js';
import { readTlsStatSync } from '../../proxy/ktls/tls-stat.js';
import { pingPong, sClientLines, startHandoffEcho } from '../helpers/handoff-echo.js';
import { selfSignedCert } from '../helpers/pki.js';
import type { Teardown } from '../helpers/teardown.js';
import { sha256 } from '../helpers/upstream.js';
import { skipOutsideLab as skip } from './helpers/sockets.js';

/** Line-echo server whose record layer follows the real decision for this kernel. */
function startEcho(t: Teardown, probe: KernelProbe, forceTls13Rx: boolean, extra: { txKeyRecordLimit?: bigint; keyUsageCheckWrites?: number } = {}) {
  return startHandoffEcho(t, {
    tls: { ...selfSignedCert(), minVersion: 'TLSv1.3' },
    decide: (facts) => decide({
      flag: true,
      ktls: { direction: 'txrx', ciphers: DEFAULT_KTLS_CIPHERS, sampleRate: 1, forceTls13Rx },
      probe,
      nativeAvailable: true,
      facts,
      draw: 0,
    }),
    install: { rekeySupported: probe.rekey, keyUpdateRateLimit: 10, rxExpectNoPad: probe.rxExpectNoPad, ...extra },
  });
}

/** s_client, one line at a time: a data line is sent after the previous echo came back. */
const sClient = (port: number, steps: string[]) => sClientLines(port, steps, { args: ['-ciphersuites', 'TLS_AES_128_GCM_SHA256'], commandPauseMs: 500 });

t.test('TLS 1.3 KeyUpdate with kTLS', { skip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.available, `kTLS available (${probe.reasonDetail ?? 'ok'})`);

  if (probe.rekey) {
    t.test('rekey kernel: txrx; K and k followed in the kernel', async (t) => {
      const srv = await startEcho(t, probe, false);
      const before = readTlsStatSync() ?? {};
      const r = await sClient(srv.port, ['line-one', 'K', 'line-two', 'k', 'line-three']);
      const s = await srv.served[0]!;
      t.strictSame(s.decision, { mode: 'txrx', reason: 'enabled' });
      t.equal(r.code, 0, `s_client exit (${r.err.slice(-300)})`);
      t.match(r.out, /line-one\n[\s\S]*line-two\n[\s\S]*line-three\n/, 'every line echoed across both updates');
      const st = await s.stats;
      t.equal(st.rx, 'kernel');
      t.equal(st.keyUpdatesIn, 2);
      t.equal(st.keyUpdatesOut, 1, 'answered K only');
      t.strictSame(s.keyUpdates, ['rx:ok', 'tx:ok', 'rx:ok']);
      t.equal(s.rxNoPad, true, 'TLS_RX_EXPECT_NO_PAD set at the install');
      t.strictSame(s.rxNoPadAfterKeyUpdate, [true, true], 'and still set under each new RX key');
      t.strictSame(s.syscallErrors, [], 'no syscall failed');
      t.ok(st.closeNotifyIn && st.closeNotifyOut);
      const after = readTlsStatSync() ?? {};
      t.ok((after['TlsRxRekeyOk'] ?? 0) - (before['TlsRxRekeyOk'] ?? 0) >= 2, 'kernel counted 2 RX rekeys');
      t.ok((after['TlsTxRekeyOk'] ?? 0) - (before['TlsTxRekeyOk'] ?? 0) >= 1, 'kernel counted our TX rekey');
      t.equal(after['TlsDecryptError'] ?? 0, before['TlsDecryptError'] ?? 0);
    });
    t.test('rekey kernel: the TX key usage limit rotates the kernel TX key with our own KeyUpdate', async (t) => {
      const srv = await startEcho(t, probe, false, { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
      const before = readTlsStatSync() ?? {};
      const r = await pingPong(srv.port);
      t.equal(r.error, null);
      t.equal(sha256(r.echoed), sha256(r.sent), 'byte-exact across our KeyUpdates');
      const s = await srv.served[0]!;
      const st = await s.stats;
      t.ok(st.keyUpdatesOut >= 3, `${st.keyUpdatesOut} server KeyUpdates`);
      const after = readTlsStatSync() ?? {};
      t.equal((after['TlsTxRekeyOk'] ?? 0) - (before['TlsTxRekeyOk'] ?? 0), st.keyUpdatesOut, 'each one a kernel TX rekey');
    });
  } else {
    t.test('kernel without rekey: the TX key usage limit ends the connection gracefully', async (t) => {
      const srv = await startEcho(t, probe, false, { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
      const r = await pingPong(srv.port);
      t.equal(r.error, null, 'a clean close, not an error');
      t.ok(r.echoed.length < 20 * 3000, `closed after ${r.echoed.length} B`);
      const st = await (await srv.served[0]!).stats;
      t.equal(st.endReason, 'key_usage_limit');
      t.ok(st.closeNotifyOut);
    });

    t.test('kernel without rekey: tx / rekey_unsupported; k followed in JS; K ends gracefully', async (t) => {
      const srv = await startEcho(t, probe, false);
      const r = await sClient(srv.port, ['line-one', 'k', 'line-two', 'K', 'never-echoed']);
      const s = await srv.served[0]!;
      t.strictSame(s.decision, { mode: 'tx', reason: 'rekey_unsupported' });
      t.match(r.out, /line-one\n[\s\S]*line-two\n/, 'k did not disturb the connection');
      t.notMatch(r.out, /never-echoed\n/);
      const st = await s.stats;
      t.equal(st.rx, 'js');
      t.equal(st.endReason, 'rekey_unsupported');
      t.ok(st.closeNotifyOut, 'closed with our close_notify');
      t.strictSame(s.keyUpdates, ['rx:ok', 'rx:ok', 'tx:unsupported']);
    });

    t.test('kernel without rekey, forceTls13Rx: txrx; the first KeyUpdate ends gracefully', async (t) => {
      const srv = await startEcho(t, probe, true);
      const r = await sClient(srv.port, ['line-one', 'k', 'never-echoed']);
      const s = await srv.served[0]!;
      t.strictSame(s.decision, { mode: 'txrx', reason: 'enabled' });
      t.match(r.out, /line-one\n/);
      t.notMatch(r.out, /never-echoed\n/);
      const st = await s.stats;
      t.equal(st.rx, 'kernel');
      t.equal(st.endReason, 'rekey_unsupported');
      t.ok(st.closeNotifyOut);
      t.strictSame(s.keyUpdates, ['rx:unsupported']);
    });
  }
});
