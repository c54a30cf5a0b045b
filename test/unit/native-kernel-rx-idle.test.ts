// What an idle connection with RX in the kernel keeps (issue 11, item 5): the
// production RecordLayerStream with kernel RX over the real native poller, on
// plain loopback TCP (no kTLS on the host: recvRecord is played by a plain
// recv, every read "application data", as in record-layer-splice-stream).
// Each connection receives one message, exact, then sits idle. Every stream
// used to keep a 64 KiB receive buffer of its own for its whole life (64 MiB
// per 1 000 idle connections, ~45 KiB RSS each in the lab); now one buffer per
// thread is shared, and an idle stream holds none. The real kTLS path:
// test/kernel/idle-memory.test.ts.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { type KtlsNative, native as loadNative, nativeStatus, socketFd } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { ContentType } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';

const status = nativeStatus();
const skip = status.available ? false : `native addon unavailable: ${status.available ? '' : status.reason}`;
const N = 200;

/** The real addon (poller, recvPlain) with the kTLS-only calls played on plain TCP. */
function plainKernel(real: KtlsNative): KtlsNative {
  return Object.assign(Object.create(real) as KtlsNative, {
    getCryptoInfo: () => ({ version: 'TLSv1.3', cipher: 'AES_GCM_128', recSeq: 0n }),
    setCryptoInfo: () => undefined,
    recvRecord: (fd: number, buf: Buffer) => {
      const r = real.recvPlain(fd, buf);
      if (r === null) return null;
      return r.eof || r.bytes === 0 ? { type: 0, bytes: 0, eof: true } : { type: ContentType.APPLICATION_DATA, bytes: r.bytes, eof: false };
    },
  });
}

async function pairs(t: Test, n: number): Promise<Array<{ server: net.Socket; client: net.Socket }>> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  const out: Array<{ server: net.Socket; client: net.Socket }> = [];
  for (let i = 0; i < n; i++) {
    const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => client.once('connect', r));
    out.push({ server: await accepted, client });
  }
  srv.close();
  t.teardown(() => {
    for (const p of out) {
      p.client.destroy();
      p.server.destroy();
    }
  });
  return out;
}

/** A kernel-RX stream over `raw`, as install.ts builds it after the hand-off. */
function kernelRxStream(raw: net.Socket, native: KtlsNative): RecordLayerStream {
  stopReading(raw);
  const fd = socketFd(raw);
  if (fd === null) throw new Error('no fd');
  return new RecordLayerStream({
    raw,
    fd,
    native,
    version: 'TLSv1.3',
    cipher: 'AES_GCM_128',
    tx: { side: 'kernel', keys: RecordProtection.tls13('AES_GCM_128', randomBytes(32)) },
    rx: { side: 'kernel', keys: RecordProtection.tls13('AES_GCM_128', randomBytes(32)) },
    rekeySupported: true,
    keyUpdateRateLimit: 100,
    allowHalfOpen: true,
    splice: false,
  });
}

const gc = (globalThis as { gc?: () => void }).gc;

t.test(`${N} idle kernel-RX streams keep no receive buffer of their own; every message exact`, { skip }, async (t) => {
  const native = plainKernel(loadNative());
  const ps = await pairs(t, N);
  gc?.();
  const before = process.memoryUsage().arrayBuffers;
  const streams: RecordLayerStream[] = [];
  await Promise.all(
    ps.map(async (p, i) => {
      const s = kernelRxStream(p.server, native);
      streams.push(s);
      s.on('error', (err) => t.fail(String(err)));
      const msg = Buffer.from(`GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const got = new Promise<Buffer>((resolve) => {
        const parts: Buffer[] = [];
        let n = 0;
        s.on('data', (d: Buffer) => {
          parts.push(d);
          n += d.length;
          if (n >= msg.length) resolve(Buffer.concat(parts));
        });
      });
      p.client.write(msg);
      const b = await got;
      if (!b.equals(msg)) t.fail(`stream ${i}: got ${JSON.stringify(b.toString())}`);
    }),
  );
  gc?.();
  const perStream = (process.memoryUsage().arrayBuffers - before) / N;
  // Before: 64 KiB each. What is left per stream is the message copies and key buffers (< 1 KiB).
  t.ok(perStream < 4096, `ArrayBuffer memory per idle stream: ${(perStream / 1024).toFixed(2)} KiB`);
  for (const s of streams) s.destroy();
});
