// installKtls on a host whose kernel has no TLS ULP (this machine: CONFIG_TLS
// unset): attaching the ULP fails before any key is in the kernel, so the
// connection must survive in the JS record layer from the exact hand-off
// state, with decision `install_failed` and the errno reported. Real clients:
// Node's TLS client (byte-exact echo, close_notify) and openssl s_client
// (TLS 1.3 KeyUpdate `K`/`k`, answered in JS).
import t from 'tap';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { pingPong, readEchoThenEnd, sClientLines, startHandoffEcho } from '../helpers/handoff-echo.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { selfSignedCert } from '../helpers/pki.js';
import { nativeStatus } from '../../native/index.js';
import type { Teardown } from '../helpers/teardown.js';
import { sha256 } from '../helpers/upstream.js';

const skip = skipUnlessKtlsLess('the lab tests cover it');

function startEcho(t: Teardown, mode: 'tx' | 'txrx', extra: { txKeyRecordLimit?: bigint; keyUsageCheckWrites?: number } = {}) {
  return startHandoffEcho(t, {
    tls: { ...selfSignedCert(), minVersion: 'TLSv1.2' },
    handshakeTimeoutMs: 20_000,
    decide: () => ({ mode, reason: 'enabled' }),
    install: { rekeySupported: true, keyUpdateRateLimit: 10, ...extra },
  });
}

for (const mode of ['tx', 'txrx'] as const) {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    t.test(`${mode} ${version}: ULP refused → JS record layer, byte-exact echo, close_notify both ways`, { skip }, async (t) => {
      const srv = await startEcho(t, mode);
      const payload = randomBytes(600_000);
      const c = tls.connect({ port: srv.port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: version, maxVersion: version }, () => {
        c.write(payload.subarray(0, 1000)); // rides with the Finished: leftover
        setImmediate(() => c.write(payload.subarray(1000)));
      });
      const echoed = await readEchoThenEnd(c, payload.length);
      t.equal(sha256(echoed), sha256(payload), 'byte-exact both ways');
      const s = await srv.served[0]!;
      t.strictSame(s.install.decision, { mode: 'userspace', reason: 'install_failed' });
      t.equal(s.failures.length, 1, 'install failure reported once');
      t.equal(s.failures[0]?.stage, 'ulp');
      t.match(s.failures[0]?.errno, /^E[A-Z]+$/, `errno ${s.failures[0]?.errno}`);
      const st = await s.stats;
      t.equal(st.tx, 'js');
      t.equal(st.rx, 'js');
      t.equal(st.txBytesUserspace, payload.length);
      t.equal(st.rxBytesUserspace, payload.length);
      t.ok(st.closeNotifyIn && st.closeNotifyOut && !st.truncated, 'close_notify both ways');
    });
  }
}

t.test('s_client K and k: KeyUpdate answered and followed in the JS record layer', { skip }, async (t) => {
  const srv = await startEcho(t, 'txrx');
  const r = await sClientLines(srv.port, ['before-update', 'K', 'after-K', 'k', 'after-k'], { commandPauseMs: 200 });
  t.equal(r.code, 0, `s_client exit (stderr: ${r.err.slice(-300)})`);
  t.match(r.out, /before-update\n[\s\S]*after-K\n[\s\S]*after-k\n/);
  t.match(r.err, /KEYUPDATE/);
  const s = await srv.served[0]!;
  const st = await s.stats;
  t.equal(st.keyUpdatesIn, 2, 'K and k received');
  t.equal(st.keyUpdatesOut, 1, 'only K asked for our update');
  t.strictSame(s.keyUpdates, ['rx:ok', 'tx:ok', 'rx:ok'], 'K: RX then our TX update; k: RX only');
  t.ok(st.closeNotifyIn, 's_client closed with close_notify');
});

t.test('TLS 1.3 key usage limit: our own KeyUpdate rotates TX, the client follows', { skip }, async (t) => {
  const srv = await startEcho(t, 'txrx', { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
  // One chunk per round trip: every echo is a separate server write.
  const r = await pingPong(srv.port);
  t.equal(r.error, null);
  t.equal(sha256(r.echoed), sha256(r.sent), 'byte-exact across our KeyUpdates');
  const s = await srv.served[0]!;
  const st = await s.stats;
  t.ok(st.keyUpdatesOut >= 3, `${st.keyUpdatesOut} server KeyUpdates`);
  t.equal(st.keyUpdatesIn, 0);
});

// A `userspace` decision (flag off mid-handshake, suite not in ktls.ciphers, …):
// the engine still hands off and installKtls builds the JS record layer from
// the hand-off state without a syscall (issue 8: never Node's TLS over the
// engine's Duplex). Same stream as the install_failed fallback, so the same
// checks: ChaCha20, KeyUpdate both ways, the TX key usage limit, close_notify.
// The echo rig loads the native addon (it reads getsockopt back), though nothing here installs.
const needsNative = nativeStatus().available ? false : 'native addon not built';

function startDeclined(t: Teardown, extra: { txKeyRecordLimit?: bigint; keyUsageCheckWrites?: number } = {}) {
  return startHandoffEcho(t, {
    tls: { ...selfSignedCert(), minVersion: 'TLSv1.2' },
    handshakeTimeoutMs: 20_000,
    decide: () => ({ mode: 'userspace', reason: 'cipher_not_allowed' }),
    install: { rekeySupported: true, keyUpdateRateLimit: 10, ...extra },
  });
}

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`userspace decision, ${version} ChaCha20: JS record layer without any install, byte-exact, close_notify`, { skip: needsNative }, async (t) => {
    const srv = await startDeclined(t);
    const payload = randomBytes(300_000);
    const ciphers = version === 'TLSv1.3' ? 'TLS_CHACHA20_POLY1305_SHA256' : 'ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305';
    const c = tls.connect({ port: srv.port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: version, maxVersion: version, ciphers }, () => c.write(payload));
    const echoed = await readEchoThenEnd(c, payload.length);
    t.equal(sha256(echoed), sha256(payload), 'byte-exact both ways');
    const s = await srv.served[0]!;
    t.strictSame(s.install.decision, { mode: 'userspace', reason: 'cipher_not_allowed' }, 'the decision is kept as the label');
    t.equal(s.failures.length, 0, 'nothing was attempted, nothing failed');
    t.notOk(s.kernelTx || s.kernelRx, 'no key in the kernel');
    t.equal(s.install.stream.cipher, 'CHACHA20_POLY1305');
    const st = await s.stats;
    t.ok(st.tx === 'js' && st.rx === 'js', 'both sides in JS');
    t.ok(st.closeNotifyIn && st.closeNotifyOut && !st.truncated, 'close_notify both ways');
  });
}

t.test('userspace decision: s_client K and k answered and followed in JS (ChaCha20)', { skip: needsNative }, async (t) => {
  const srv = await startDeclined(t);
  const r = await sClientLines(srv.port, ['before-update', 'K', 'after-K', 'k', 'after-k'], { commandPauseMs: 200, args: ['-ciphersuites', 'TLS_CHACHA20_POLY1305_SHA256'] });
  t.equal(r.code, 0, `s_client exit (stderr: ${r.err.slice(-300)})`);
  t.match(r.out, /before-update\n[\s\S]*after-K\n[\s\S]*after-k\n/);
  const s = await srv.served[0]!;
  const st = await s.stats;
  t.equal(st.keyUpdatesIn, 2);
  t.equal(st.keyUpdatesOut, 1);
  t.strictSame(s.keyUpdates, ['rx:ok', 'tx:ok', 'rx:ok']);
});

t.test('userspace decision: TLS 1.3 key usage limit rotates TX in JS', { skip: needsNative }, async (t) => {
  const srv = await startDeclined(t, { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
  const r = await pingPong(srv.port);
  t.equal(r.error, null);
  t.equal(sha256(r.echoed), sha256(r.sent), 'byte-exact across our KeyUpdates');
  const st = await (await srv.served[0]!).stats;
  t.ok(st.keyUpdatesOut >= 3, `${st.keyUpdatesOut} server KeyUpdates`);
});
