// The real sidecar on kTLS with `openssl s_client` as the client:
//  - the client's close_notify ends the connection cleanly (the sidecar's close
//    line says it saw close_notify, no truncation);
//  - TLS 1.3 KeyUpdates: `k` (update_not_requested) and `K` (update_requested)
//    keep the connection working where the kernel can rekey (probe.rekey,
//    Linux >= 6.14); elsewhere the policy holds: TLS 1.3 runs `tx` with
//    `rekey_unsupported`, `k` is followed in JS RX, `K` ends the connection
//    gracefully (key_updates_total{result="unsupported"}).
import t from 'tap';
import { spawn } from 'node:child_process';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { startUpstream } from '../helpers/upstream.js';
import { type LabLogLine, closeField, labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';

const REQUEST = 'GET / HTTP/1.1\nHost: localhost\n\n';
/** The upstream's default answer body, after the response head. */
const ANSWER = /\r\n\r\nok\n/g;

interface SClientRun {
  code: number | null;
  out: string;
  err: string;
  answers: number;
}

/**
 * s_client with steps: a request waits for its answer; `k`/`K` are written
 * alone (s_client treats a line that is just the letter as a command) and
 * given time for their own read(). Ends stdin after the last step: s_client
 * then sends close_notify.
 */
function sClient(port: number, steps: string[], extra: string[] = []): Promise<SClientRun> {
  return new Promise((resolve) => {
    // No -quiet / -ign_eof: they turn the K/k commands off. -crlf: HTTP line ends.
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', labPki().caCert, '-crlf', ...extra], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let i = 0;
    let started = false;
    let waitAnswers = -1;
    const answers = (): number => out.match(ANSWER)?.length ?? 0;
    const next = (): void => {
      if (!p.stdin.writable) return;
      if (i >= steps.length) {
        p.stdin.end();
        return;
      }
      const step = steps[i++] ?? '';
      if (step === 'K' || step === 'k') {
        p.stdin.write(`${step}\n`);
        setTimeout(next, 1500);
      } else {
        waitAnswers = answers() + 1;
        p.stdin.write(step);
      }
    };
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && /Verify return code/.test(out)) {
        started = true;
        // Let s_client read the session tickets before the first command.
        setTimeout(next, 300);
      } else if (waitAnswers > 0 && answers() >= waitAnswers) {
        waitAnswers = -1;
        next();
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdin.on('error', () => undefined);
    const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err, answers: answers() });
    });
  });
}

t.test('sidecar + s_client', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, {
    upstream: { url: upstream.url },
    ktls: { enabled: true, direction: 'txrx', ciphers: ['TLS_AES_128_GCM_SHA256', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] },
  });
  const closed = (pred: (l: LabLogLine) => boolean): Promise<LabLogLine> => sc.waitForLog((l) => l.event === 'connection_closed' && pred(l));

  await t.test('TLS 1.2: client close_notify ends the kTLS connection cleanly', async (t) => {
    const before = await sc.metric('ktls_sidecar_connections_closed_total', { ktls: 'on', reason: 'client_close', tls_version: 'TLSv1.2' });
    const r = await sClient(sc.tlsPort, [REQUEST], ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256']);
    t.equal(r.answers, 1, 'answer received');
    const line = await closed((l) => l['tls_version'] === 'TLSv1.2');
    t.equal(line['ktls'], 'on');
    t.equal(line['direction'], 'txrx');
    t.equal(line['close_reason'], 'client_close');
    const notify = closeField(line, 'close_notify_in');
    t.ok(notify === true || notify === 1, `close_notify seen (${String(notify)})`);
    t.equal(closeField(line, 'truncated'), false, 'not truncated');
    t.equal((await sc.metric('ktls_sidecar_connections_closed_total', { ktls: 'on', reason: 'client_close', tls_version: 'TLSv1.2' })) - before, 1);
  });

  const tls13 = ['-tls1_3', '-ciphersuites', 'TLS_AES_128_GCM_SHA256'];
  await t.test(`TLS 1.3 k (update_not_requested) keeps the connection working (rekey=${probe.rekey})`, async (t) => {
    const dir = probe.rekey ? 'txrx' : 'tx';
    const opened = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', tls_version: 'TLSv1.3', direction: dir });
    const ok = await sc.metric('ktls_sidecar_ktls_key_updates_total', { direction: 'rx', result: 'ok' });
    const r = await sClient(sc.tlsPort, [REQUEST, 'k', REQUEST, 'k', REQUEST], tls13);
    t.equal(r.answers, 3, `three answers around two KeyUpdates ${r.err.slice(-300)}`);
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', tls_version: 'TLSv1.3', direction: dir })) - opened, 1, `direction ${dir}`);
    t.equal((await sc.metric('ktls_sidecar_ktls_key_updates_total', { direction: 'rx', result: 'ok' })) - ok, 2, 'two peer KeyUpdates followed');
    if (!probe.rekey) {
      const reason = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', tls_version: 'TLSv1.3', ktls_reason: 'rekey_unsupported' });
      t.ok(reason >= 1, 'TLS 1.3 on this kernel: tx with rekey_unsupported');
    }
  });

  await t.test(`TLS 1.3 K (update_requested): ${probe.rekey ? 'followed, connection keeps working' : 'graceful close (rekey_unsupported)'}`, async (t) => {
    const txOk = await sc.metric('ktls_sidecar_ktls_key_updates_total', { direction: 'tx', result: 'ok' });
    const unsupported = await sc.metric('ktls_sidecar_ktls_key_updates_total', { result: 'unsupported' });
    const r = await sClient(sc.tlsPort, [REQUEST, 'K', REQUEST], tls13);
    if (probe.rekey) {
      t.equal(r.answers, 2, 'answer after K');
      t.ok((await sc.metric('ktls_sidecar_ktls_key_updates_total', { direction: 'tx', result: 'ok' })) - txOk >= 1, 'our TX KeyUpdate counted ok');
    } else {
      t.equal(r.answers, 1, 'no answer after K: the connection ended');
      t.equal((await sc.metric('ktls_sidecar_ktls_key_updates_total', { result: 'unsupported' })) - unsupported, 1, 'counted unsupported');
      t.match(r.out + r.err, /closed|DONE|close notify/i, 's_client saw the end of the connection');
    }
  });

  // The sidecar sets TLS_RX_EXPECT_NO_PAD by default (ktls.rxExpectNoPad) where TLS 1.3 RX is in the kernel; a client
  // that pads its records still gets every answer, each padded record decrypted twice and counted.
  await t.test(`TLS 1.3, a client that pads every record (s_client -record_padding): answered${probe.rekey && probe.rxExpectNoPad ? ', counted as no-pad violations' : ''}`, async (t) => {
    const violations = (): Promise<number> => sc.metric('ktls_sidecar_kernel_tls_stat_total', { stat: 'TlsRxNoPadViolation' });
    const v0 = await violations();
    const r = await sClient(sc.tlsPort, [REQUEST, REQUEST, REQUEST], [...tls13, '-record_padding', '512']);
    t.equal(r.answers, 3, `three answers to padded requests ${r.err.slice(-300)}`);
    // The counter is the VM's (other test files run meanwhile): a lower bound.
    if (probe.rekey && probe.rxExpectNoPad) t.ok((await violations()) - v0 >= 3, 'each padded request record decrypted in place, then again');
  });
});
