// tcp mode through the splice pump when things happen mid-splice, the real
// sidecar on real kTLS: control records in the middle of an RX splice
// (close_notify; TLS 1.3 KeyUpdates where the kernel rekeys), a client RST
// and an upstream RST (counted once, the sidecar lives, another connection's
// bytes stay exact, no fd left behind), the kTLS flag turning off during a
// splice (drainOnDisable close: stopped and ended cleanly; keep: it goes on),
// and the PROXY v2 header still first.
//
// The upstream: the client's first 9 bytes say how much to send back (u64)
// and how (0: at once, then FIN; 1: after the client's FIN; 2: echo every
// byte, FIN after the client's); it hashes what follows them. With
// `proxyHeader` a PROXY v2 header is parsed first.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { type ParsedProxyV2, parseProxyV2Header } from '../helpers/proxy-v2.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { closeField, labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';
import { fdsBack, heldFds } from './sidecar-http-splice-lab.js';

const MIB = 1024 * 1024;
const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' } as const;
const TLS12 = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' } as const;
type Version = typeof TLS13 | typeof TLS12;

interface UpstreamConn {
  socket: net.Socket;
  proxy: ParsedProxyV2 | null;
  done: Promise<{ bytes: number; sha: string }>;
}

async function startUpstream(t: Test, proxyHeader = false): Promise<{ port: number; conns: UpstreamConn[]; nth(i: number): Promise<UpstreamConn> }> {
  const conns: UpstreamConn[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    const c: UpstreamConn = { socket: s, proxy: null, done: Promise.resolve({ bytes: 0, sha: '' }) };
    conns.push(c);
    c.done = new Promise((resolve) => {
      const h = createHash('sha256');
      let head: Buffer = Buffer.alloc(0);
      let mode = -1;
      let n = 0;
      let bytes = 0;
      let sha: string | null = null;
      const result = () => ({ bytes, sha: (sha ??= h.digest('hex')) });
      const send = (): void => {
        const body = patternBytes(n, 7);
        for (let i = 0; i < body.length && !s.destroyed; i += MIB) s.write(body.subarray(i, i + MIB));
        s.end();
      };
      s.on('data', (d: Buffer) => {
        if (mode < 0) {
          head = Buffer.concat([head, d]);
          if (proxyHeader && !c.proxy) {
            const p = parseProxyV2Header(head);
            if (!p) return;
            c.proxy = p;
            head = head.subarray(p.length);
          }
          if (head.length < 9) return;
          n = Number(head.readBigUInt64BE(0));
          mode = head[8] ?? 0;
          d = head.subarray(9);
          if (mode === 0) send();
        }
        bytes += d.length;
        h.update(d);
        if (mode === 2 && d.length > 0) s.write(d);
      });
      s.on('end', () => {
        resolve(result());
        if (mode === 1) send();
        if (mode === 2) s.end();
      });
      s.on('close', () => resolve(result()));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const c of conns) c.socket.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    nth: async (i) => {
      while (conns.length <= i) await new Promise((r) => setTimeout(r, 10));
      return conns[i]!;
    },
  };
}

interface Client {
  raw: net.Socket;
  /** The client's port (the socket forgets it once closed). */
  localPort: number;
  sock: tls.TLSSocket;
  received: Buffer[];
  bytes(): number;
  /** 'end' (close_notify/FIN), 'close' or 'error' first. */
  finished: Promise<string>;
}

/** A TLS client over a raw socket of ours (so the test can RST it); sends the 9-byte header. */
async function connect(port: number, v: Version, down: number, mode: number): Promise<Client> {
  const raw = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  raw.on('error', () => undefined);
  const opts: tls.ConnectionOptions & { allowHalfOpen: boolean } = { socket: raw, servername: 'localhost', ca: readFileSync(labPki().caCert), ...v, allowHalfOpen: true };
  const sock = tls.connect(opts);
  const received: Buffer[] = [];
  let n = 0;
  const finished = new Promise<string>((resolve) => {
    sock.on('data', (d: Buffer) => {
      received.push(d);
      n += d.length;
    });
    sock.once('end', () => resolve('end'));
    sock.once('close', () => resolve('close'));
    sock.once('error', (e: Error) => resolve(`error: ${e.message}`));
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('error', reject);
  });
  const head = Buffer.alloc(9);
  head.writeBigUInt64BE(BigInt(down));
  head[8] = mode;
  sock.write(head);
  return { raw, localPort: raw.localPort ?? -1, sock, received, bytes: () => n, finished };
}

async function until(cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** A prefix of the upstream's pattern, byte-exact. */
function isPrefix(got: Buffer, n: number): boolean {
  return got.length <= n && got.equals(patternBytes(got.length, 7));
}

/** 8 MiB both ways on a second connection while the first is being cut. */
async function bystander(port: number, v: Version): Promise<{ got: string; want: string }> {
  const c = await connect(port, v, 8 * MIB, 1);
  const body = patternBytes(8 * MIB, 11);
  for (let i = 0; i < body.length; i += MIB) if (!c.sock.write(body.subarray(i, i + MIB))) await new Promise((r) => c.sock.once('drain', r));
  c.sock.end();
  await c.finished;
  c.sock.destroy();
  return { got: sha256(Buffer.concat(c.received)), want: sha256(patternBytes(8 * MIB, 7)) };
}

t.test('tcp splice under faults', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  // TLS 1.3 RX is in the kernel only where it can rekey; TLS 1.2 txrx everywhere.
  const v: Version = probe.rekey ? TLS13 : TLS12;
  const upstream = await startUpstream(t);
  const sc = await startLabSidecar(t, {
    mode: 'tcp',
    upstream: { address: `127.0.0.1:${upstream.port}` },
    log: { level: 'info', connections: 'all' },
    ktls: { enabled: true, direction: 'txrx', ciphers: ['TLS_AES_128_GCM_SHA256', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] },
  });
  const metric = (name: string, labels: Record<string, string> = {}): Promise<number> => sc.metric(`ktls_sidecar_${name}`, labels);
  const closeLines = (): number => sc.logs.filter((l) => l.event === 'connection_closed').length;
  const nextClose = async (from: number) => {
    await until(() => closeLines() > from);
    return sc.logs.filter((l) => l.event === 'connection_closed')[from];
  };

  await t.test('close_notify in the middle of an RX splice (TLS 1.2 and 1.3)', async (t) => {
    for (const ver of [TLS12, ...(probe.rekey ? [TLS13] : [])]) {
      const from = closeLines();
      const spliced = await metric('bytes_spliced_received_total', { direction: 'txrx' });
      const c = await connect(sc.tlsPort, ver, 0, 2);
      const lines = ['one\n', 'two\n', 'three\n'].map((s) => Buffer.from(s));
      let want = 0;
      for (const l of lines) {
        c.sock.write(l);
        want += l.length;
        await until(() => c.bytes() >= want, 10_000);
      }
      c.sock.end(); // close_notify, then FIN
      t.equal(await c.finished, 'end', `${ver.minVersion}: the upstream's end came back (close_notify + FIN)`);
      t.equal(Buffer.concat(c.received).toString(), 'one\ntwo\nthree\n', 'echoed through both pumps');
      const line = await nextClose(from);
      t.equal(line?.['direction'], 'txrx');
      t.equal(closeField(line!, 'close_notify_in'), true, 'the close_notify was read between two runs');
      t.equal(closeField(line!, 'truncated'), false);
      t.ok((await metric('bytes_spliced_received_total', { direction: 'txrx' })) - spliced > 0, 'client bytes were spliced');
      c.sock.destroy();
    }
  });

  await t.test(`TLS 1.3 KeyUpdates in the middle of an RX splice (K and k)`, { skip: probe.rekey ? false : 'kernel cannot rekey: TLS 1.3 RX stays in JS' }, async (t) => {
    const from = closeLines();
    const rxOk = await metric('ktls_key_updates_total', { direction: 'rx', result: 'ok' });
    const txOk = await metric('ktls_key_updates_total', { direction: 'tx', result: 'ok' });
    // s_client: the 9-byte header is not typeable, so the upstream sees "echo mode" from a line whose 9th byte is 2.
    const r = await sClient(sc.tlsPort, ['\x00\x00\x00\x00\x00\x00\x00\x00\x02line-one', 'K', 'line-two', 'k', 'line-three']);
    t.match(r.out, /line-one\n[\s\S]*line-two\n[\s\S]*line-three\n/, `every line echoed across both KeyUpdates ${r.err.slice(-300)}`);
    t.equal((await metric('ktls_key_updates_total', { direction: 'rx', result: 'ok' })) - rxOk, 2, 'both peer KeyUpdates followed in the kernel');
    t.ok((await metric('ktls_key_updates_total', { direction: 'tx', result: 'ok' })) - txOk >= 1, 'K answered with our KeyUpdate between two TX runs');
    const line = await nextClose(from);
    t.equal(closeField(line!, 'key_updates_in'), 2);
    t.ok(Number(closeField(line!, 'bytes_in_spliced')) > 0, 'RX was spliced around them');
  });

  // Warm up (pooled pipes are not counted: heldFds).
  await Promise.all([bystander(sc.tlsPort, v), bystander(sc.tlsPort, v)]);
  await until(async () => (await metric('connections_active', { protocol: 'tcp' })) === 0);
  const baseline = await heldFds(sc);

  const afterCut = async (t: Test): Promise<void> => {
    t.ok(await until(async () => (await metric('connections_active', { protocol: 'tcp' })) === 0), 'every connection closed');
    const back = await fdsBack(sc, baseline);
    t.ok(back.ok, back.detail);
    t.equal(sc.proc.exitCode, null, 'the sidecar lives');
  };

  await t.test('client RST mid-splice', async (t) => {
    const before = { up: await metric('upstream_errors_total'), splice: (await metric('ktls_errors_total', { stage: 'splice_in' })) + (await metric('ktls_errors_total', { stage: 'splice_out' })) };
    const other = bystander(sc.tlsPort, v);
    const a = await connect(sc.tlsPort, v, 64 * MIB, 0);
    await until(() => a.bytes() >= MIB);
    a.raw.resetAndDestroy();
    const o = await other;
    t.equal(o.got, o.want, 'the other connection: 8 MiB byte-exact');
    await afterCut(t);
    t.equal((await metric('upstream_errors_total')) - before.up, 0, 'not an upstream error');
    const splice = (await metric('ktls_errors_total', { stage: 'splice_in' })) + (await metric('ktls_errors_total', { stage: 'splice_out' }));
    t.ok(splice - before.splice <= 1, `counted at most once (${splice - before.splice})`);
  });

  await t.test('upstream RST mid-splice', async (t) => {
    const reset = await metric('upstream_errors_total', { reason: 'reset' });
    const all = await metric('upstream_errors_total');
    const from = closeLines();
    const n = upstream.conns.length;
    const a = await connect(sc.tlsPort, v, 64 * MIB, 0);
    const other = bystander(sc.tlsPort, v);
    await until(() => a.bytes() >= MIB);
    (await upstream.nth(n)).socket.resetAndDestroy();
    // The sidecar closes the client's side as on any upstream failure (no close_notify: Node's client
    // reports the bare FIN as 'end' all the same); what counts is that the stream was cut short.
    await a.finished;
    const got = Buffer.concat(a.received);
    t.ok(got.length < 64 * MIB && isPrefix(got, 64 * MIB), `cut short after ${got.length} B, a byte-exact prefix`);
    const o = await other;
    t.equal(o.got, o.want, 'the other connection: 8 MiB byte-exact');
    await afterCut(t);
    t.equal((await metric('upstream_errors_total', { reason: 'reset' })) - reset, 1, 'one upstream reset');
    t.equal((await metric('upstream_errors_total')) - all, 1, 'counted once');
    const lines = sc.logs.filter((l) => l.event === 'connection_closed').slice(from);
    t.ok(lines.some((l) => l['close_reason'] === 'upstream_error'), 'close line: upstream_error');
    a.sock.destroy();
  });

  await t.test('PROXY v2 header first, then spliced bytes', async (t) => {
    const up = await startUpstream(t, true);
    const pp = await startLabSidecar(t, {
      mode: 'tcp',
      upstream: { address: `127.0.0.1:${up.port}`, proxyProtocol: 'v2' },
      ktls: { enabled: true, direction: 'txrx', ciphers: ['TLS_AES_128_GCM_SHA256', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] },
    });
    const c = await connect(pp.tlsPort, v, MIB, 1);
    const body = patternBytes(4 * MIB, 11);
    for (let i = 0; i < body.length; i += MIB) if (!c.sock.write(body.subarray(i, i + MIB))) await new Promise((r) => c.sock.once('drain', r));
    c.sock.end();
    t.equal(await c.finished, 'end');
    // The sidecar's readiness probe connects to the upstream too (and sends nothing): take the proxied one.
    await until(() => up.conns.some((x) => x.proxy !== null));
    const u = up.conns.find((x) => x.proxy !== null)!;
    const got = await u.done;
    t.equal(u.proxy?.sourcePort, c.localPort, 'the PROXY header came first and names the client');
    t.equal(got.sha, sha256(body), '4 MiB after it byte-exact');
    t.equal(sha256(Buffer.concat(c.received)), sha256(patternBytes(MIB, 7)));
    t.ok((await pp.metric('ktls_sidecar_bytes_spliced_received_total')) > 0, 'client bytes spliced');
    c.sock.destroy();
  });

  for (const onDisable of ['close', 'keep'] as const) {
    await t.test(`flag off during a splice, drainOnDisable: ${onDisable}`, async (t) => {
      const up = await startUpstream(t);
      const dc = await startLabSidecar(t, {
        mode: 'tcp',
        upstream: { address: `127.0.0.1:${up.port}` },
        log: { level: 'info', connections: 'all' },
        ktls: { enabled: true, direction: 'txrx', drainOnDisable: onDisable, drainTimeout: '5s', ciphers: ['TLS_AES_128_GCM_SHA256', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] },
      });
      const n = 32 * MIB;
      const c = await connect(dc.tlsPort, v, n, 0);
      c.sock.on('end', () => c.sock.end());
      await until(() => c.bytes() >= MIB);
      await dc.setKtls(false);
      t.equal(await c.finished, 'end', 'ended cleanly (close_notify + FIN)');
      const got = Buffer.concat(c.received);
      const line = await until(() => dc.logs.some((l) => l.event === 'connection_closed')).then(() => dc.logs.find((l) => l.event === 'connection_closed'));
      if (onDisable === 'close') {
        t.ok(got.length < n && isPrefix(got, n), `stopped after ${got.length} B, a byte-exact prefix`);
        t.equal(line?.['close_reason'], 'ktls_drain');
        t.equal(await dc.metric('ktls_sidecar_ktls_drained_connections_total', { action: 'closed' }), 1);
      } else {
        t.equal(sha256(got), sha256(patternBytes(n, 7)), 'kept splicing: 32 MiB byte-exact');
        t.equal(await dc.metric('ktls_sidecar_ktls_drained_connections_total', { action: 'kept' }), 1);
        t.equal(closeField(line!, 'bytes_out_spliced'), n, 'all of it spliced');
      }
      c.sock.destroy();
    });
  }
});

/** openssl s_client (TLS 1.3), one line at a time; K/k are its KeyUpdate commands. */
function sClient(port: number, steps: string[]): Promise<{ out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', labPki().caCert, '-tls1_3', '-ciphersuites', 'TLS_AES_128_GCM_SHA256'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let i = 0;
    let started = false;
    let waitingFor: string | null = null;
    const next = (): void => {
      if (i >= steps.length) return void p.stdin.end();
      const line = steps[i++]!;
      p.stdin.write(`${line}\n`);
      if (line === 'K' || line === 'k') setTimeout(next, 1500);
      else waitingFor = line.slice(line.lastIndexOf('\x02') + 1);
    };
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && /Verify return code/.test(out)) {
        started = true;
        setTimeout(next, 300);
      } else if (waitingFor && out.includes(`${waitingFor}\n`)) {
        waitingFor = null;
        next();
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdin.on('error', () => undefined);
    const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('close', () => {
      clearTimeout(timer);
      resolve({ out, err });
    });
  });
}
