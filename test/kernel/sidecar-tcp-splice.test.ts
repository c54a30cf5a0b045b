// tcp mode through the splice pump, the real sidecar on real kTLS: sha256 both
// ways for 0 B .. 64 MiB, TLS 1.2 and 1.3, ktls.direction tx and txrx (AES-128-GCM;
// every other cipher × version the kernel holds with just over 1 MiB each way); the
// spliced counters and the close line show the bytes (all of what the
// upstream sent; what the client sent when RX is in the kernel), and are 0
// with ktls.splice: false; half-close each way.
//
// The upstream: the client's first 9 bytes say how much to send back (u64)
// and when (0: at once, then FIN — the upstream ends first; 1: after the
// client's FIN — the client ends first); it hashes everything after them.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { probeKernel } from '../../proxy/ktls/probe.js';
import type { KernelProbe } from '../../proxy/ktls/probe.js';
import { metricValue } from '../helpers/metrics.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { expectedDirection } from './helpers/sidecar-matrix.js';
import { type LabSidecar, type Suite, SUITES, closeField, labPki, labSkip, startLabSidecar, tlsStat } from './helpers/sidecar-lab.js';

const KIB = 1024;
const MIB = 1024 * KIB;

interface Received {
  bytes: number;
  sha: string;
}

/**
 * The test upstream (see the file comment). Results are listed in the order
 * the connections' headers arrived: the sidecar's readiness probe connects
 * too, and sends nothing.
 */
async function startXferUpstream(t: { teardown(fn: () => unknown): void }): Promise<{ port: number; next(): Promise<Received>; headers(): number }> {
  const results: Array<Promise<Received>> = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    let listed: ((r: Promise<Received>) => void) | null = (r) => results.push(r);
    const result = new Promise<Received>((resolve) => {
      const h = createHash('sha256');
      let head: Buffer = Buffer.alloc(0);
      let plan: { n: number; atOnce: boolean } | null = null;
      let bytes = 0;
      const send = (): void => {
        const body = patternBytes(plan!.n, 7);
        for (let i = 0; i < body.length; i += MIB) s.write(body.subarray(i, i + MIB));
        s.end();
      };
      s.on('data', (d: Buffer) => {
        if (!plan) {
          head = Buffer.concat([head, d]);
          if (head.length < 9) return;
          plan = { n: Number(head.readBigUInt64BE(0)), atOnce: head[8] === 0 };
          listed?.(result);
          listed = null;
          d = head.subarray(9);
          if (plan.atOnce) send();
        }
        bytes += d.length;
        h.update(d);
      });
      s.on('end', () => {
        resolve({ bytes, sha: h.digest('hex') });
        if (plan && !plan.atOnce) send();
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  let taken = 0;
  return {
    port: (server.address() as net.AddressInfo).port,
    next: async () => {
      while (results.length <= taken) await new Promise((r) => setTimeout(r, 20));
      return results[taken++]!;
    },
    headers: () => results.length,
  };
}

function tlsOptions(port: number, s: Suite): tls.ConnectionOptions & { allowHalfOpen: boolean } {
  return {
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ca: readFileSync(labPki().caCert),
    minVersion: s.version,
    maxVersion: s.version,
    ciphers: s.openssl,
    allowHalfOpen: true,
  };
}

/**
 * One connection: `up` bytes to the upstream, `down` back; `upstreamFirst`:
 * the upstream ends before the client. The body and the client's FIN wait
 * until `ready` (the upstream saw the header): a FIN that reaches the socket
 * before the sidecar installs kTLS keeps the connection in userspace
 * (ktls-early-fin.test.ts), and this file is about kTLS connections.
 */
async function xfer(port: number, s: Suite, up: number, down: number, upstreamFirst: boolean, ready: () => Promise<unknown>): Promise<Received> {
  const sock = tls.connect(tlsOptions(port, s));
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('error', reject);
  });
  const h = createHash('sha256');
  let bytes = 0;
  const ended = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    sock.once('end', resolve);
    sock.once('close', () => reject(new Error(`closed before its end (${bytes} B received)`)));
  });
  const head = Buffer.alloc(9);
  head.writeBigUInt64BE(BigInt(down));
  head[8] = upstreamFirst ? 0 : 1;
  sock.write(head);
  await ready();
  const body = patternBytes(up, 11);
  for (let i = 0; i < body.length; i += MIB) {
    if (!sock.write(body.subarray(i, i + MIB))) await new Promise((r) => sock.once('drain', r));
  }
  sock.end();
  await ended;
  sock.destroy();
  return { bytes, sha: h.digest('hex') };
}

type Counts = Record<'sent' | 'received' | 'splicedSent' | 'splicedReceived', number>;

async function counts(sc: LabSidecar, labels: Record<string, string>): Promise<Counts> {
  const text = await sc.metrics();
  return {
    sent: metricValue(text, 'ktls_sidecar_bytes_sent_total', labels),
    received: metricValue(text, 'ktls_sidecar_bytes_received_total', labels),
    splicedSent: metricValue(text, 'ktls_sidecar_bytes_spliced_sent_total', labels),
    splicedReceived: metricValue(text, 'ktls_sidecar_bytes_spliced_received_total', labels),
  };
}

const minus = (a: Counts, b: Counts): Counts => ({
  sent: a.sent - b.sent,
  received: a.received - b.received,
  splicedSent: a.splicedSent - b.splicedSent,
  splicedReceived: a.splicedReceived - b.splicedReceived,
});

/** The suites every kTLS kernel holds: TLS 1.3 and 1.2 AES-128-GCM. */
function gcmSuites(probe: KernelProbe): Suite[] {
  return SUITES.filter((s) => s.kernel === 'AES_GCM_128' && probe.supports(s.version, s.kernel, 'tx'));
}

/** Every other cipher × version this kernel holds in TX (AES-256-GCM, ChaCha20-Poly1305; 1.3 and 1.2). */
function otherSuites(probe: KernelProbe): Suite[] {
  return SUITES.filter((s) => s.kernel !== 'AES_GCM_128' && probe.supports(s.version, s.kernel, 'tx'));
}

type Case = [up: number, down: number, upstreamFirst: boolean, what: string];

/**
 * `sizes[i]` runs on the i-th suite `pick` gives (by default TLS 1.3, then TLS 1.2 AES-128-GCM): the file has to fit
 * the lab's per-file time.
 */
async function runMode(t: Test, probe: KernelProbe, mode: 'tx' | 'txrx', splice: boolean, sizes: Case[][], rxFirst = false, pick = gcmSuites): Promise<void> {
  const upstream = await startXferUpstream(t);
  // rxFirst: the suites whose RX the kernel holds here first (6.1 keeps TLS 1.3 RX in JS: slow for 64 MiB).
  const rank = (s: Suite): number => (rxFirst && expectedDirection(probe, s, mode) === 'txrx' ? 0 : 1);
  const suites = pick(probe).sort((a, b) => rank(a) - rank(b)).slice(0, sizes.length);
  const sc = await startLabSidecar(t, {
    mode: 'tcp',
    upstream: { address: `127.0.0.1:${upstream.port}` },
    log: { level: 'info', connections: 'all' },
    ktls: { enabled: true, direction: mode, ciphers: suites.map((s) => s.iana), splice },
  });
  for (const [i, s] of suites.entries()) {
    const direction = expectedDirection(probe, s, mode);
    for (const [up, down, upstreamFirst, what] of sizes[i] ?? []) {
      const suite = pick === gcmSuites ? s.version : `${s.version} ${s.iana}`;
      await t.test(`${suite} ${mode}${splice ? '' : ' splice:false'} (${direction}): ${what}`, async (t) => {
        const labels = { ktls: 'on', tls_version: s.version, direction, protocol: 'tcp' };
        const before = await counts(sc, labels);
        const stat0 = tlsStat();
        const closedBefore = sc.logs.filter((l) => l.event === 'connection_closed').length;
        const seen = upstream.headers();
        const got = await xfer(sc.tlsPort, s, up, down, upstreamFirst, async () => {
          while (upstream.headers() <= seen) await new Promise((r) => setTimeout(r, 10));
        });
        const atUpstream = await upstream.next();
        t.equal(got.bytes, down, 'client received every byte');
        t.equal(got.sha, sha256(patternBytes(down, 7)), 'upstream → client byte-exact');
        t.equal(atUpstream.bytes, up, 'upstream received every byte');
        t.equal(atUpstream.sha, sha256(patternBytes(up, 11)), 'client → upstream byte-exact');
        const line = await sc.waitForLog((l) => l.event === 'connection_closed' && sc.logs.filter((x) => x.event === 'connection_closed').indexOf(l) >= closedBefore, 30_000);
        t.equal(await sc.metric('ktls_sidecar_connections_active', { protocol: 'tcp' }), 0, 'closed');
        const d = minus(await counts(sc, labels), before);
        t.comment(`counts ${JSON.stringify(d)}; close line ${JSON.stringify(line)}`);
        t.equal(d.sent, down, 'bytes_sent_total counts every byte');
        t.equal(d.received, up + 9, 'bytes_received_total counts every byte');
        if (!splice) {
          t.same([d.splicedSent, d.splicedReceived], [0, 0], 'nothing spliced with ktls.splice: false');
          t.equal(closeField(line, 'bytes_out_spliced'), 0);
        } else {
          // The upstream answers only after the sidecar connected to it: all of it spliced.
          t.equal(d.splicedSent, down, 'every byte from the upstream spliced');
          t.equal(closeField(line, 'bytes_out_spliced'), down, 'close line: bytes_out_spliced');
          if (direction === 'txrx') {
            // What the client sent before the upstream was connected went through JS (flushed first).
            t.ok(d.splicedReceived <= up + 9 && d.splicedReceived >= Math.max(0, up - 256 * KIB), `client bytes spliced: ${d.splicedReceived} of ${up + 9}`);
            t.equal(closeField(line, 'bytes_in_spliced'), d.splicedReceived, 'close line: bytes_in_spliced');
          } else {
            t.equal(d.splicedReceived, 0, 'tx: the client\'s records are decrypted in JS');
          }
        }
        t.equal(line['close_reason'], upstreamFirst ? 'upstream_close' : 'client_close', 'who ended first');
        const stat1 = tlsStat();
        t.equal(stat1['TlsDecryptError'] ?? 0, stat0['TlsDecryptError'] ?? 0, 'no decrypt error in the kernel');
        t.ok((stat1['TlsTxSw'] ?? 0) > (stat0['TlsTxSw'] ?? 0), 'kernel TX installed (tls_stat)');
        if (direction === 'txrx') t.ok((stat1['TlsRxSw'] ?? 0) > (stat0['TlsRxSw'] ?? 0), 'kernel RX installed (tls_stat)');
      });
    }
  }
}

const B0: Case = [0, 0, false, '0 B both ways'];
const B1: Case = [1, 1, false, '1 B both ways'];
const K64: Case = [64 * KIB, 64 * KIB, false, '64 KiB both ways'];
const M16: Case = [16 * MIB, 16 * MIB, false, '16 MiB both ways, client FIN first (half-close)'];
const UP_FIRST: Case = [16 * MIB, 1, true, 'upstream FIN first while the client still sends 16 MiB (half-close)'];
// Not a whole number of 16 KiB records, nor of the pump's 256 KiB pipe, either way.
const M1_ODD: Case = [MIB + 4099, MIB + 16_385, false, 'just over 1 MiB each way (partial last records)'];

t.test('tcp mode through the splice pump', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  await t.test('txrx', (t) => runMode(t, probe, 'txrx', true, [[B0, B1, K64, M16, UP_FIRST], [B1, M16]]));
  await t.test('tx', (t) => runMode(t, probe, 'tx', true, [[B1, M16], [K64]]));
  await t.test('64 MiB each way, txrx', (t) => runMode(t, probe, 'txrx', true, [[[64 * MIB, 64 * MIB, false, '64 MiB both ways']]], true));
  const others = otherSuites(probe);
  // Both lab kernels (7.x, 6.1) hold AES-256-GCM and ChaCha20-Poly1305 on TLS 1.3 and 1.2: an empty list is a lab fault.
  t.ok(others.length > 0, `other ciphers the kernel holds: ${others.map((s) => `${s.version} ${s.iana}`).join(', ') || 'none'}`);
  await t.test('every other cipher × version, txrx', (t) => runMode(t, probe, 'txrx', true, others.map(() => [M1_ODD]), false, otherSuites));
  await t.test('ktls.splice: false keeps JS pipes', (t) => runMode(t, probe, 'txrx', false, [[[64 * KIB, MIB, false, '64 KiB up, 1 MiB down']]]));
});
