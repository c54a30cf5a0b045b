// TLS 1.3 KeyUpdate on real kTLS connections (kernel lab VM), driven by
// `openssl s_client`'s interactive `K` (update_requested) and `k`
// (update_not_requested). The decision is the real one, fed by the real
// kernel probe, so each kernel line shows its policy:
//   7.x (rekey): txrx; K and k are followed in the kernel (TLS_RX/TLS_TX set again).
//   6.1 (no rekey): tx with reason rekey_unsupported; k is followed in JS RX;
//     K cannot be answered (TX rekey impossible) → graceful close_notify.
//   6.1 with forceTls13Rx: txrx; any KeyUpdate → graceful close.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import { installKtls } from '../../proxy/ktls/install.js';
import type { InstallResult } from '../../proxy/ktls/install.js';
import { decide } from '../../proxy/ktls/decision.js';
import type { KtlsDecision } from '../../proxy/ktls/decision.js';
import { DEFAULT_KTLS_CIPHERS } from '../../proxy/ktls/cipher-policy.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import type { KernelProbe } from '../../proxy/ktls/probe.js';
import { readTlsStatSync } from '../../proxy/ktls/tls-stat.js';
import type { KtlsStreamStats } from '../../proxy/ktls/kernel-stream.js';
import { native } from '../../native/index.js';

const inLab = process.env['KTLS_LAB'] === '1';
const skip = inLab ? false : 'not in the kernel lab VM (run `npm run test:kernel`)';

function makeCert(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-ku-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], { stdio: 'ignore' });
  return { key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) };
}

interface Served {
  decision: KtlsDecision;
  install: InstallResult;
  keyUpdates: string[];
  stats: Promise<KtlsStreamStats>;
}

/** Line-echo server whose record layer follows the real decision for this kernel. */
async function startEcho(t: { teardown(fn: () => void): void }, probe: KernelProbe, forceTls13Rx: boolean, extra: { txKeyRecordLimit?: bigint; keyUsageCheckWrites?: number } = {}) {
  const tlsServer = tls.createServer({ ...makeCert(), minVersion: 'TLSv1.3' });
  const engine = new HandshakeEngine(tlsServer, { handshakeTimeoutMs: 60_000, maxBufferedBytes: 1 << 20 });
  const served: Promise<Served>[] = [];
  const server = net.createServer((raw) => {
    served.push((async () => {
      let decision: KtlsDecision = { mode: 'userspace', reason: 'flag_off' };
      const hs = await engine.accept(raw, {
        offload: (facts) => {
          decision = decide({
            flag: true,
            ktls: { direction: 'txrx', ciphers: DEFAULT_KTLS_CIPHERS, sampleRate: 1, forceTls13Rx },
            probe,
            nativeAvailable: true,
            facts,
            draw: 0,
          });
          return decision.mode !== 'userspace';
        },
      });
      if (hs.mode !== 'handoff') throw new Error(`no hand-off: ${hs.reason} (${decision.reason})`);
      const keyUpdates: string[] = [];
      const install = await installKtls({
        handoff: hs,
        decision,
        native: native(),
        rekeySupported: probe.rekey,
        keyUpdateRateLimit: 10,
        ...extra,
        events: { keyUpdate: (d, r) => keyUpdates.push(`${d}:${r}`) },
      });
      const s = install.stream;
      s.on('data', (d: Buffer) => s.write(d));
      s.on('error', () => {});
      const stats = new Promise<KtlsStreamStats>((resolve) => s.on('close', () => resolve(s.stats())));
      return { decision, install, keyUpdates, stats };
    })());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    engine.close();
  });
  return { port: (server.address() as net.AddressInfo).port, served };
}

/** s_client, one line at a time: a data line is sent after the previous echo came back. */
function sClient(port: number, steps: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    // No -quiet: it turns the K/k commands off.
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_3', '-ciphersuites', 'TLS_AES_128_GCM_SHA256'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let i = 0;
    let started = false;
    let waitingFor: string | null = null;
    const next = (): void => {
      if (i >= steps.length) {
        p.stdin.end();
        return;
      }
      const line = steps[i++]!;
      if (!p.stdin.writable) return;
      p.stdin.write(`${line}\n`);
      // s_client consumes a command line itself; let it have its own read() before the next line.
      if (line === 'K' || line === 'k') setTimeout(next, 500);
      else waitingFor = line;
    };
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && /Verify return code/.test(out)) {
        started = true;
        next();
      } else if (waitingFor && out.includes(`${waitingFor}\n`)) {
        waitingFor = null;
        next();
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdin.on('error', () => {});
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

/** Node client: 20 chunks, one per round trip (each echo is its own server write); resolves at end or error. */
function pingPong(port: number, chunks: Buffer[]): Promise<{ echoed: Buffer; error: string | null }> {
  return new Promise((resolve) => {
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    const got: Buffer[] = [];
    let n = 0;
    let i = 0;
    let sent = 0;
    const total = chunks.reduce((a, b) => a + b.length, 0);
    const send = (): void => {
      const ch = chunks[i++]!;
      sent += ch.length;
      c.write(ch);
    };
    c.once('secureConnect', send);
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n === total) c.end();
      else if (n === sent) send();
    });
    let error: string | null = null;
    c.on('error', (e: Error) => (error = e.message));
    c.on('close', () => resolve({ echoed: Buffer.concat(got), error }));
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

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
      t.ok(st.closeNotifyIn && st.closeNotifyOut);
      const after = readTlsStatSync() ?? {};
      t.ok((after['TlsRxRekeyOk'] ?? 0) - (before['TlsRxRekeyOk'] ?? 0) >= 2, 'kernel counted 2 RX rekeys');
      t.ok((after['TlsTxRekeyOk'] ?? 0) - (before['TlsTxRekeyOk'] ?? 0) >= 1, 'kernel counted our TX rekey');
      t.equal(after['TlsDecryptError'] ?? 0, before['TlsDecryptError'] ?? 0);
    });
    t.test('rekey kernel: the TX key usage limit rotates the kernel TX key with our own KeyUpdate', async (t) => {
      const srv = await startEcho(t, probe, false, { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
      const before = readTlsStatSync() ?? {};
      const chunks = Array.from({ length: 20 }, () => randomBytes(3000));
      const r = await pingPong(srv.port, chunks);
      t.equal(r.error, null);
      t.equal(sha(r.echoed), sha(Buffer.concat(chunks)), 'byte-exact across our KeyUpdates');
      const s = await srv.served[0]!;
      const st = await s.stats;
      t.ok(st.keyUpdatesOut >= 3, `${st.keyUpdatesOut} server KeyUpdates`);
      const after = readTlsStatSync() ?? {};
      t.equal((after['TlsTxRekeyOk'] ?? 0) - (before['TlsTxRekeyOk'] ?? 0), st.keyUpdatesOut, 'each one a kernel TX rekey');
    });
  } else {
    t.test('kernel without rekey: the TX key usage limit ends the connection gracefully', async (t) => {
      const srv = await startEcho(t, probe, false, { txKeyRecordLimit: 4n, keyUsageCheckWrites: 1 });
      const chunks = Array.from({ length: 20 }, () => randomBytes(3000));
      const r = await pingPong(srv.port, chunks);
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
