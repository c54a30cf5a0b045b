// Real kTLS on a real connection (runs in the kernel lab VM): a Node TLS client
// ↔ handshake engine → hand-off → installKtls → RecordLayerStream echo server.
// Byte-exact both ways, for `tx` (kernel TX, JS RX) and `txrx` (both in the
// kernel), TLS 1.3 and 1.2, close_notify both ways, and proof that the kernel
// holds the keys (getsockopt reads them back; /proc/net/tls_stat counts them).
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import { installKtls, KtlsInstallError } from '../../proxy/record-layer/install.js';
import type { RecordLayerStats } from '../../proxy/record-layer/paths.js';
import { native, nativeStatus, NativeSyscallError } from '../../native/index.js';
import { readEchoThenEnd, sClientLines, startHandoffEcho } from '../helpers/handoff-echo.js';
import { selfSignedCert } from '../helpers/pki.js';
import type { Teardown } from '../helpers/teardown.js';
import { sha256 as sha } from '../helpers/upstream.js';
import { tlsStat } from './helpers/sidecar-lab.js';
import { kernelHasRekey, skipOutsideLab as skip } from './helpers/sockets.js';

/** Echo server: every accepted connection is handed off and installed in `mode`. */
function startEcho(t: Teardown, mode: 'tx' | 'txrx', pem: { key: Buffer; cert: Buffer }, onHandoff?: () => void) {
  return startHandoffEcho(t, {
    tls: { ...pem, minVersion: 'TLSv1.2', ciphers: `${tls.DEFAULT_CIPHERS}:ECDHE-ECDSA-CHACHA20-POLY1305` },
    decide: () => ({ mode, reason: 'enabled' }),
    install: { rekeySupported: kernelHasRekey(), keyUpdateRateLimit: 100, rxExpectNoPad: true },
    onHandoff,
  });
}

/** Client: send `payload` in pieces, read it all back, then end() (close_notify) and wait for the server's. */
async function echoClient(port: number, opts: tls.ConnectionOptions, payload: Buffer): Promise<{ echoed: Buffer; ended: boolean }> {
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...opts }, () => {
    // Write right away: the first bytes often ride with the Finished (leftover at hand-off).
    for (let o = 0; o < payload.length; o += 50_000) c.write(payload.subarray(o, o + 50_000));
  });
  const echoed = await readEchoThenEnd(c, payload.length);
  return { echoed, ended: c.readableEnded };
}

const CASES: Array<{ name: string; opts: tls.ConnectionOptions }> = [
  { name: 'TLS 1.3 AES-128-GCM', opts: { minVersion: 'TLSv1.3', ciphersuites: 'TLS_AES_128_GCM_SHA256' } as tls.ConnectionOptions },
  { name: 'TLS 1.3 AES-256-GCM', opts: { minVersion: 'TLSv1.3', ciphersuites: 'TLS_AES_256_GCM_SHA384' } as tls.ConnectionOptions },
  { name: 'TLS 1.3 ChaCha20', opts: { minVersion: 'TLSv1.3', ciphersuites: 'TLS_CHACHA20_POLY1305_SHA256' } as tls.ConnectionOptions },
  { name: 'TLS 1.2 ECDHE-ECDSA-AES128-GCM', opts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' } },
  { name: 'TLS 1.2 ECDHE-ECDSA-CHACHA20', opts: { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' } },
];

t.test('kernel handoff echo', { skip }, (t) => {
  t.ok(nativeStatus().available, 'native addon loaded');
  const pem = selfSignedCert();
  for (const mode of ['tx', 'txrx'] as const) {
    for (const c of CASES) {
      t.test(`${mode} ${c.name}`, async (t) => {
        const srv = await startEcho(t, mode, pem);
        const before = tlsStat();
        const payload = randomBytes(1 << 20);
        const res = await echoClient(srv.port, c.opts, payload);
        t.equal(res.echoed.length, payload.length, 'every byte came back');
        t.equal(sha(res.echoed), sha(payload), 'byte-exact both ways');
        t.ok(res.ended, 'client saw our close_notify as a clean end');
        const conn = await srv.served[0]!;
        t.equal(conn.install.decision.mode, mode, `installed as ${mode} (not ${conn.install.decision.reason})`);
        t.equal(conn.failures.length, 0, 'no install failure');
        t.ok(conn.kernelTx, 'getsockopt(TLS_TX) reads the installed state');
        t.equal(conn.kernelRx, mode === 'txrx', 'TLS_RX installed only in txrx');
        const after = tlsStat();
        t.ok((after['TlsTxSw'] ?? 0) > (before['TlsTxSw'] ?? 0), 'TlsTxSw counted the install');
        if (mode === 'txrx') t.ok((after['TlsRxSw'] ?? 0) > (before['TlsRxSw'] ?? 0), 'TlsRxSw counted the install');
        t.equal(after['TlsDecryptError'] ?? 0, before['TlsDecryptError'] ?? 0, 'no kernel decrypt errors');
        const st = await conn.stats;
        t.equal(st.txBytesKernel, payload.length, 'all TX through the kernel');
        t.equal(st.rxBytesKernel + st.rxBytesUserspace, payload.length, 'all RX accounted');
        if (mode === 'txrx') t.ok(st.rxBytesKernel > 0 && st.rxRecordsKernel > 0, `kernel decrypted ${st.rxBytesKernel} B`);
        else t.equal(st.rxBytesKernel, 0, 'tx mode: RX in JS');
        t.ok(st.txRecordsKernel > 0, `kernel sealed ${st.txRecordsKernel} records`);
        t.ok(st.closeNotifyIn, 'client close_notify seen');
        t.ok(st.closeNotifyOut, 'our close_notify sent');
        t.notOk(st.truncated);
        t.strictSame(conn.syscallErrors, [], 'no syscall failed');
        if (mode === 'txrx' && c.name.startsWith('TLS 1.3')) {
          t.equal(conn.rxNoPad, true, 'TLS_RX_EXPECT_NO_PAD set on the TLS 1.3 RX socket');
          // Only records that are not application data (the client's close_notify) are decrypted twice. The
          // counter is the VM's (other test files run meanwhile): a bound, not an exact count.
          const retries = (after['TlsDecryptRetry'] ?? 0) - (before['TlsDecryptRetry'] ?? 0);
          t.ok(retries < st.rxRecordsKernel / 2, `data records decrypted in place: ${retries} retries for ${st.rxRecordsKernel} records in the kernel`);
        } else {
          t.not(conn.rxNoPad, true, 'TLS_RX_EXPECT_NO_PAD only on a TLS 1.3 RX in the kernel');
        }
      });
    }
  }
  t.end();
});

t.test('TLS_RX_EXPECT_NO_PAD and a client that pads every record (s_client -record_padding)', { skip }, (t) => {
  const pem = selfSignedCert();
  for (const noPad of [true, false]) {
    t.test(`rxExpectNoPad ${noPad}`, async (t) => {
      const srv = await startHandoffEcho(t, {
        tls: { ...pem, minVersion: 'TLSv1.3' },
        decide: () => ({ mode: 'txrx', reason: 'enabled' }),
        install: { rekeySupported: kernelHasRekey(), keyUpdateRateLimit: 100, rxExpectNoPad: noPad },
      });
      const lines = Array.from({ length: 12 }, (_, i) => `padded-line-${i}-${randomBytes(24).toString('hex')}`);
      const before = tlsStat();
      const r = await sClientLines(srv.port, lines, { args: ['-ciphersuites', 'TLS_AES_128_GCM_SHA256', '-record_padding', '512'], commandPauseMs: 0 });
      t.equal(r.code, 0, `s_client exit (${r.err.slice(-300)})`);
      for (const l of lines) t.ok(r.out.includes(`${l}\n`), `${l.slice(0, 14)} echoed`);
      const conn = await srv.served[0]!;
      t.equal(conn.install.decision.mode, 'txrx');
      t.equal(conn.rxNoPad, noPad, `TLS_RX_EXPECT_NO_PAD ${noPad}`);
      const st = await conn.stats;
      t.equal(st.rx, 'kernel', 'RX stayed in the kernel');
      t.ok(st.closeNotifyIn, 'the padded close_notify was read');
      const after = tlsStat();
      const delta = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0);
      t.equal(delta('TlsDecryptError'), 0, 'no decrypt error');
      // With the option, each padded record was decrypted in place, found padded, and decrypted again.
      // (The counters are the VM's: other test files run meanwhile, so only a lower bound is asserted.)
      if (noPad) {
        t.ok(delta('TlsDecryptRetry') >= lines.length, `${delta('TlsDecryptRetry')} retries for ${lines.length} padded lines`);
        t.ok(delta('TlsRxNoPadViolation') >= lines.length, `${delta('TlsRxNoPadViolation')} no-pad violations counted`);
      }
    });
  }
  t.end();
});

t.test('TLS_RX_EXPECT_NO_PAD refused: counted under stage option, RX stays in the kernel, byte-exact', { skip }, async (t) => {
  const real = native();
  // The addon as a kernel before 6.0 answers (ENOPROTOOPT); every other call is the real one.
  const refusing = Object.create(real) as typeof real;
  refusing.setOption = (fd, opt, on) => {
    if (opt === 'TLS_RX_EXPECT_NO_PAD') throw new NativeSyscallError(92, 'setsockopt(TLS_RX_EXPECT_NO_PAD)');
    real.setOption(fd, opt, on);
  };
  const srv = await startHandoffEcho(t, {
    tls: { ...selfSignedCert(), minVersion: 'TLSv1.3' },
    decide: () => ({ mode: 'txrx', reason: 'enabled' }),
    install: { rekeySupported: kernelHasRekey(), keyUpdateRateLimit: 100, rxExpectNoPad: true },
    native: refusing,
  });
  const payload = randomBytes(300_000);
  const res = await echoClient(srv.port, { minVersion: 'TLSv1.3' }, payload);
  t.equal(sha(res.echoed), sha(payload), 'byte-exact both ways');
  const conn = await srv.served[0]!;
  t.strictSame(conn.install.decision, { mode: 'txrx', reason: 'enabled' }, 'still txrx');
  t.strictSame(conn.syscallErrors, ['option:ENOPROTOOPT'], 'the refusal counted once, stage option');
  t.equal(conn.rxNoPad, false, 'the option is off');
  const st = await conn.stats;
  t.equal(st.rx, 'kernel', 'RX in the kernel');
  t.ok(st.rxBytesKernel > 0, 'the kernel decrypted');
});

/**
 * Between a TLS 1.3 client and its TCP socket: after the ClientHello, it
 * forwards the client's Finished flight (CCS + the first protected record)
 * plus the first 10 bytes of the next record, and the rest only on
 * release(). The engine thus hands off with a leftover that ends mid-record,
 * and the install must read exactly the missing bytes before TLS_RX. (Node's
 * client writes its Finished and first data together, so this works on record
 * boundaries, not on write calls.)
 */
class SplitAfterFinished extends Duplex {
  private writes = 0;
  private pending: Buffer = Buffer.alloc(0);
  private split = false;
  private released = false;

  constructor(private readonly sock: net.Socket) {
    super();
    sock.on('data', (d: Buffer) => this.push(d));
    sock.on('end', () => this.push(null));
    sock.on('error', (e) => this.destroy(e));
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writes++;
    if (this.writes === 1 || this.released) {
      this.sock.write(chunk, cb);
      return;
    }
    this.pending = Buffer.concat([this.pending, chunk]);
    if (!this.split) this.trySplit();
    cb();
  }

  private trySplit(): void {
    // Walk records: CCS (20) records, then the Finished (first 23), then 10 bytes of the next record.
    let off = 0;
    for (;;) {
      if (this.pending.length < off + 5) return;
      const type = this.pending[off]!;
      const end = off + 5 + this.pending.readUInt16BE(off + 3);
      if (this.pending.length < end) return;
      off = end;
      if (type === 23) break;
    }
    if (this.pending.length < off + 10) return;
    this.split = true;
    this.sock.write(this.pending.subarray(0, off + 10));
    this.pending = this.pending.subarray(off + 10);
  }

  release(): void {
    this.released = true;
    if (this.pending.length) this.sock.write(this.pending);
    this.pending = Buffer.alloc(0);
  }

  override _final(cb: () => void): void {
    this.sock.end(cb);
  }
}

t.test('leftover ending mid-record: the rest is read exactly, then the kernel takes over', { skip }, (t) => {
  const pem = selfSignedCert();
  for (const mode of ['tx', 'txrx'] as const) {
    t.test(mode, async (t) => {
      let shim: SplitAfterFinished | null = null;
      const srv = await startEcho(t, mode, pem, () => shim!.release());
      const payload = randomBytes(300_000);
      const sock = net.connect(srv.port, '127.0.0.1');
      await new Promise((r) => sock.once('connect', r));
      const split = new SplitAfterFinished(sock);
      shim = split;
      const c = tls.connect({ socket: split, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => c.write(payload));
      const echoed = await readEchoThenEnd(c, payload.length);
      t.equal(sha(echoed), sha(payload), 'byte-exact both ways');
      const conn = await srv.served[0]!;
      t.equal(conn.leftover, 10, 'hand-off leftover was 10 bytes of a record');
      t.equal(conn.install.decision.mode, mode);
      const st = await conn.stats;
      t.equal(st.rxBytesKernel + st.rxBytesUserspace, payload.length);
      if (mode === 'txrx') {
        t.ok(st.rxBytesUserspace > 0, `completed record decrypted in JS (${st.rxBytesUserspace} B)`);
        t.ok(st.rxBytesKernel > 0, `rest decrypted by the kernel (${st.rxBytesKernel} B)`);
      }
      t.ok(st.closeNotifyIn && st.closeNotifyOut);
    });
  }
  t.end();
});

t.test('kernel TX under backpressure: 8 MiB to a client that reads only once the server is blocked', { skip }, async (t) => {
  const pem = selfSignedCert();
  const tlsServer = tls.createServer({ ...pem, minVersion: 'TLSv1.3' });
  const engine = new HandshakeEngine(tlsServer, { handshakeTimeoutMs: 60_000, maxBufferedBytes: 1 << 20 });
  const big = randomBytes(8 << 20);
  let blocked!: () => void;
  const serverBlocked = new Promise<void>((r) => (blocked = r));
  let received!: (b: Buffer) => void;
  const clientGot = new Promise<Buffer>((r) => (received = r));
  const written = new Promise<{ sawBackpressure: boolean; stats: RecordLayerStats }>((resolve, reject) => {
    const server = net.createServer((raw) => {
      void (async () => {
        const hs = await engine.accept(raw, { offload: () => true });
        if (hs.mode !== 'handoff') throw new Error(hs.reason);
        const { stream } = await installKtls({ handoff: hs, decision: { mode: 'txrx', reason: 'enabled' }, native: native(), rekeySupported: kernelHasRekey(), keyUpdateRateLimit: 10 });
        stream.on('error', reject);
        stream.resume();
        let sawBackpressure = false;
        for (let o = 0; o < big.length; o += 256 * 1024) {
          if (!stream.write(big.subarray(o, o + 256 * 1024))) {
            if (!sawBackpressure) blocked();
            sawBackpressure = true;
            await new Promise((r) => stream.once('drain', r));
          }
        }
        stream.end(() => resolve({ sawBackpressure, stats: stream.stats() }));
      })().catch(reject);
    }).listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      c.pause(); // read nothing until the server is blocked
      const got: Buffer[] = [];
      void serverBlocked.then(() => c.resume());
      c.on('data', (d: Buffer) => got.push(d));
      c.on('end', () => {
        received(Buffer.concat(got));
        c.end();
        server.close();
        engine.close();
      });
    });
  });
  const r = await written;
  t.equal(sha(await clientGot), sha(big), '8 MiB byte-exact after the stall');
  t.ok(r.sawBackpressure, 'the stream pushed back while the client did not read');
  t.equal(r.stats.txBytesKernel, big.length);
});

t.test('RX refused after TX is in the kernel: the connection is closed, never half-installed', { skip }, async (t) => {
  const pem = selfSignedCert();
  const tlsServer = tls.createServer({ ...pem, minVersion: 'TLSv1.3' });
  const engine = new HandshakeEngine(tlsServer, { handshakeTimeoutMs: 60_000, maxBufferedBytes: 1 << 20 });
  const outcome = new Promise<unknown>((resolve) => {
    const server = net.createServer((raw) => {
      void (async () => {
        const hs = await engine.accept(raw, { offload: () => true });
        if (hs.mode !== 'handoff') throw new Error(hs.reason);
        // The kernel refuses an RX state whose version differs from TX (EINVAL): a
        // real refusal that only comes after TLS_TX succeeded.
        (hs.rx as { version: string }).version = 'TLSv1.2';
        await installKtls({ handoff: hs, decision: { mode: 'txrx', reason: 'enabled' }, native: native(), rekeySupported: false, keyUpdateRateLimit: 10 });
        return 'installed';
      })().then(resolve, resolve);
    }).listen(0, '127.0.0.1', () => {
      // A client that sends nothing after the handshake: no leftover, so RX install is attempted.
      const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      c.on('error', () => {});
      c.resume(); // consume, so the server's close is seen
      c.on('close', () => {
        server.close();
        engine.close();
      });
    });
  });
  const err = await outcome;
  t.ok(err instanceof KtlsInstallError, `install rejected: ${String(err)}`);
  const info = (err as KtlsInstallError).info;
  t.equal(info?.stage, 'install_rx');
  t.equal(info?.errno, 'EINVAL');
});
