// What the kTLS http path's own plumbing costs per request on a real CPU, on a host without kernel TLS (the lab's
// emulated CPU over-penalises JIT-heavy code, and there the record-layer stream is the JIT-heavy part).
//
//   node --import tsx bench/record-layer-cost.ts                    the table (interleaved rounds, medians [min..max])
//   node --import tsx bench/record-layer-cost.ts --serve MODE BYTES one server; prints "listening <port>"
//
// The same node:http server answers GET with BYTES of body (keep-alive) in three ways:
//   socket  on the accepted net.Socket: libuv reads and llhttp consumes the socket natively, writes go straight to
//           it. What a kTLS connection would cost if the HTTP server read the kernel socket itself.
//   stream  on a RecordLayerStream (proxy/record-layer) with TX and RX "in the kernel" over the same plain TCP
//           socket: the poller, recvRecord, the Duplex and the ordered TX queue of a txrx connection, everything
//           but the kernel's AES-GCM (the socket has no TLS ULP, so a record comes without a type cmsg and this
//           bench reads it as application data: the one change to the addon's answers).
//   tls     node:https, TLS 1.3 TLS_AES_128_GCM_SHA256: what the sidecar's kTLS-off connection costs (TLSWrap).
// stream − socket is the JS plumbing a txrx connection adds; tls − socket is what userspace TLS adds. A txrx
// connection in the lab costs stream plus the kernel's AES-GCM for the same bytes.
//
// Method: like bench/run.ts (server alone on core 0, wrk -t1 -c8 on core 1, CPU = the server's utime+stime from
// /proc around each wrk run, BENCH_WARMUP seconds of load before the rounds). Knobs: BENCH_ROUNDS (default 5),
// BENCH_DURATION (5 s), BENCH_WARMUP (2 s), BENCH_SIZES (default 1024,65536 bytes).
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type KtlsNative, native as loadNative, socketFd } from '../native/index.js';
import { RecordLayerStream } from '../proxy/record-layer/stream.js';
import { ContentType } from '../proxy/tls/control.js';
import { treeCpu } from './lib/proc.js';
import { cpuPlan, ensureTools, makeCert, pinned, startChild, stopChild, waitListening } from './lib/tools.js';
import { errorCount, errorText, runWrk, writeWrkScript } from './lib/wrk.js';

const MODES = ['socket', 'stream', 'tls'] as const;
type Mode = (typeof MODES)[number];

function serve(mode: Mode, bytes: number, certDir: string): void {
  const body = Buffer.alloc(bytes, 0x61);
  const answer = (_req: http.IncomingMessage, res: http.ServerResponse): void => {
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    res.end(body);
  };
  const listening = (s: net.Server): void => {
    s.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${(s.address() as net.AddressInfo).port}\n`));
  };
  if (mode === 'tls') {
    const cert = readFileSync(path.join(certDir, 'cert.pem'));
    const key = readFileSync(path.join(certDir, 'key.pem'));
    listening(https.createServer({ cert, key, minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' }, answer));
    return;
  }
  const server = http.createServer(answer);
  const addon = loadNative();
  // The addon as the record layer sees it, except that a plain socket's bytes read as application data records.
  const plain: KtlsNative = Object.create(addon) as KtlsNative;
  plain.recvRecord = (fd, buf) => {
    const r = addon.recvRecord(fd, buf);
    if (r && !r.eof && r.type === 0) r.type = ContentType.APPLICATION_DATA;
    return r;
  };
  listening(net.createServer({ pauseOnConnect: mode === 'stream' }, (raw) => {
    if (mode === 'socket') {
      server.emit('connection', raw);
      return;
    }
    const fd = socketFd(raw);
    if (fd === null) {
      raw.destroy();
      return;
    }
    const stream = new RecordLayerStream({
      raw, fd, native: plain, version: 'TLSv1.3', cipher: 'AES_GCM_128',
      tx: { side: 'kernel', keys: null }, rx: { side: 'kernel', keys: null }, rekeySupported: false, keyUpdateRateLimit: 0,
    });
    stream.on('error', () => stream.destroy());
    server.emit('connection', stream);
  }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function bench(): Promise<void> {
  ensureTools(false, []);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
  const seconds = Number(process.env.BENCH_DURATION ?? 5);
  const warmup = Number(process.env.BENCH_WARMUP ?? 2);
  const sizes = (process.env.BENCH_SIZES ?? '1024,65536').split(',').map(Number);
  const plan = cpuPlan();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ktls-rl-cost-'));
  makeCert(dir);
  const script = writeWrkScript(dir);
  const self = fileURLToPath(import.meta.url);
  process.stdout.write(`record-layer cost (host, node ${process.version}): ${plan.note}; ${rounds} rounds x ${seconds} s, warm-up ${warmup} s, wrk -t1 -c8\n`);
  try {
    for (const bytes of sizes) {
      const cpu = new Map<Mode, number[]>(MODES.map((m) => [m, []]));
      const rps = new Map<Mode, number[]>(MODES.map((m) => [m, []]));
      const servers = new Map<Mode, { child: ReturnType<typeof startChild>; url: string }>();
      for (const mode of MODES) {
        const child = startChild(pinned(plan.proxy, [process.execPath, '--import', 'tsx', self, '--serve', mode, String(bytes), dir]));
        const port = await waitListening(child, `${mode} server`, 20_000);
        const url = `${mode === 'tls' ? 'https' : 'http'}://127.0.0.1:${port}/`;
        servers.set(mode, { child, url });
        await runWrk({ url, seconds: warmup, connections: 8, timeoutS: 10, core: plan.client, script });
      }
      for (let r = 0; r < rounds; r++) {
        // Rotate the order so that no mode always runs first (or right after the same neighbour).
        for (let i = 0; i < MODES.length; i++) {
          const mode = MODES[(i + r) % MODES.length]!;
          const { child, url } = servers.get(mode)!;
          const before = treeCpu(child.proc.pid!);
          const w = await runWrk({ url, seconds, connections: 8, timeoutS: 10, core: plan.client, script });
          const after = treeCpu(child.proc.pid!);
          if (errorCount(w) > 0 || w.requests === 0) throw new Error(`${mode} ${bytes} B: wrk errors ${errorText(w)}`);
          cpu.get(mode)!.push(((after.user + after.sys - before.user - before.sys) * 1e6) / w.requests);
          rps.get(mode)!.push(w.requests / w.durationS);
        }
      }
      for (const { child } of servers.values()) await stopChild(child, 5000);
      const tls = median(cpu.get('tls')!);
      const sock = median(cpu.get('socket')!);
      process.stdout.write(`\n${bytes} B responses: CPU µs/request, median [min..max] of ${rounds} rounds\n\n`);
      process.stdout.write('| mode | CPU µs/req | ÷ tls | ÷ socket | req/s |\n|---|---|---|---|---|\n');
      for (const mode of MODES) {
        const xs = cpu.get(mode)!;
        const m = median(xs);
        process.stdout.write(
          `| ${mode} | ${m.toFixed(1)} [${Math.min(...xs).toFixed(1)}..${Math.max(...xs).toFixed(1)}] | ${(m / tls).toFixed(2)} | ${(m / sock).toFixed(2)} | ${median(rps.get(mode)!).toFixed(0)} |\n`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--serve') {
  const mode = argv[1] as Mode;
  if (!MODES.includes(mode)) throw new Error(`--serve: mode must be one of ${MODES.join(', ')}`);
  serve(mode, Number(argv[2]), argv[3]!);
} else {
  bench().catch((err: unknown) => {
    process.stderr.write(`record-layer cost: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
