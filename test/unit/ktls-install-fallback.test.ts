// installKtls on a host whose kernel has no TLS ULP (this machine: CONFIG_TLS
// unset): attaching the ULP fails before any key is in the kernel, so the
// connection must survive in the JS record layer from the exact hand-off
// state, with decision `install_failed` and the errno reported. Real clients:
// Node's TLS client (byte-exact echo, close_notify) and openssl s_client
// (TLS 1.3 KeyUpdate `K`/`k`, answered in JS).
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import { installKtls } from '../../proxy/ktls/install.js';
import type { InstallResult } from '../../proxy/ktls/install.js';
import type { KtlsStreamStats } from '../../proxy/ktls/kernel-stream.js';
import type { KtlsErrorClass } from '../../proxy/ktls/errno.js';
import { native, nativeStatus } from '../../native/index.js';

function hostHasKtls(): boolean {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').split(/\s+/).includes('tls');
  } catch {
    return false;
  }
}
const skip = !nativeStatus().available ? 'native addon not built' : hostHasKtls() ? 'this kernel has kTLS: the lab tests cover it' : false;

function makeCert(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'ktls-fallback-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], { stdio: 'ignore' });
  return { key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) };
}

interface Served {
  install: InstallResult;
  failures: KtlsErrorClass[];
  keyUpdates: string[];
  stats: Promise<KtlsStreamStats>;
}

async function startEcho(t: { teardown(fn: () => void): void }, mode: 'tx' | 'txrx', extra: { txKeyRecordLimit?: bigint; keyUsageCheckWrites?: number } = {}) {
  const pem = makeCert();
  const tlsServer = tls.createServer({ ...pem, minVersion: 'TLSv1.2' });
  const engine = new HandshakeEngine(tlsServer, { handshakeTimeoutMs: 20_000, maxBufferedBytes: 1 << 20 });
  const served: Promise<Served>[] = [];
  const server = net.createServer((raw) => {
    served.push((async () => {
      const hs = await engine.accept(raw, { offload: () => true });
      if (hs.mode !== 'handoff') throw new Error(`no hand-off: ${hs.reason}`);
      const failures: KtlsErrorClass[] = [];
      const keyUpdates: string[] = [];
      const install = await installKtls({
        handoff: hs,
        decision: { mode, reason: 'enabled' },
        native: native(),
        rekeySupported: true,
        keyUpdateRateLimit: 10,
        ...extra,
        events: { installFailed: (i) => failures.push(i), keyUpdate: (d, r) => keyUpdates.push(`${d}:${r}`) },
      });
      const s = install.stream;
      s.on('data', (d: Buffer) => s.write(d));
      s.on('error', () => {});
      const stats = new Promise<KtlsStreamStats>((resolve) => s.on('close', () => resolve(s.stats())));
      return { install, failures, keyUpdates, stats };
    })());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    engine.close();
  });
  return { port: (server.address() as net.AddressInfo).port, served };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

for (const mode of ['tx', 'txrx'] as const) {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    t.test(`${mode} ${version}: ULP refused → JS record layer, byte-exact echo, close_notify both ways`, { skip }, async (t) => {
      const srv = await startEcho(t, mode);
      const payload = randomBytes(600_000);
      const echoed = await new Promise<Buffer>((resolve, reject) => {
        const c = tls.connect({ port: srv.port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: version, maxVersion: version }, () => {
          c.write(payload.subarray(0, 1000)); // rides with the Finished: leftover
          setImmediate(() => c.write(payload.subarray(1000)));
        });
        const got: Buffer[] = [];
        let n = 0;
        c.on('data', (d: Buffer) => {
          got.push(d);
          n += d.length;
          if (n === payload.length) c.end();
        });
        c.on('end', () => resolve(Buffer.concat(got)));
        c.on('error', reject);
      });
      t.equal(sha(echoed), sha(payload), 'byte-exact both ways');
      const s = await srv.served[0]!;
      t.strictSame(s.install.decision, { mode: 'userspace', reason: 'install_failed' });
      t.equal(s.install.installError?.stage, 'ulp');
      t.match(s.install.installError?.errno, /^E[A-Z]+$/, `errno ${s.install.installError?.errno}`);
      t.equal(s.failures.length, 1, 'install failure reported once');
      const st = await s.stats;
      t.equal(st.tx, 'js');
      t.equal(st.rx, 'js');
      t.equal(st.txBytesUserspace, payload.length);
      t.equal(st.rxBytesUserspace, payload.length);
      t.ok(st.closeNotifyIn && st.closeNotifyOut && !st.truncated, 'close_notify both ways');
    });
  }
}

/** Drive s_client line by line: each line is sent only after the previous one's echo came back. */
function sClientSession(port: number, steps: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    // No -quiet: it would turn off the K/k commands.
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_3'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let i = 0;
    let started = false;
    let waitingFor: string | null = null;
    const next = (): void => {
      if (i >= steps.length) {
        p.stdin.end(); // EOF: s_client sends close_notify and exits
        return;
      }
      const line = steps[i++]!;
      p.stdin.write(`${line}\n`);
      // A command line is consumed by s_client itself; give it its own read() before the next line.
      if (line === 'K' || line === 'k') setTimeout(next, 200);
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
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

t.test('s_client K and k: KeyUpdate answered and followed in the JS record layer', { skip }, async (t) => {
  const srv = await startEcho(t, 'txrx');
  const r = await sClientSession(srv.port, ['before-update', 'K', 'after-K', 'k', 'after-k']);
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
  const chunks = Array.from({ length: 20 }, () => randomBytes(3000));
  const echoed = await new Promise<Buffer>((resolve, reject) => {
    const c = tls.connect({ port: srv.port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    const got: Buffer[] = [];
    let n = 0;
    let i = 0;
    const total = chunks.reduce((a, b) => a + b.length, 0);
    // One chunk per round trip: every echo is a separate server write.
    c.once('secureConnect', () => c.write(chunks[i++]!));
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n === total) c.end();
      else if (n === chunks.slice(0, i).reduce((a, b) => a + b.length, 0)) c.write(chunks[i++]!);
    });
    c.on('end', () => resolve(Buffer.concat(got)));
    c.on('error', reject);
  });
  t.equal(sha(echoed), sha(Buffer.concat(chunks)), 'byte-exact across our KeyUpdates');
  const s = await srv.served[0]!;
  const st = await s.stats;
  t.ok(st.keyUpdatesOut >= 3, `${st.keyUpdatesOut} server KeyUpdates`);
  t.equal(st.keyUpdatesIn, 0);
});
