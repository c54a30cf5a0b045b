// Microbench: the sidecar's own upstream client (proxy/upstream/) against an
// undici Pool, same origin, same concurrency, CPU of this process per request
// (process.cpuUsage: the client side only; the origin runs in a child process).
//
//   node --import tsx bench/upstream-client.ts
//
// Knobs (environment): UPBENCH_REQUESTS=20000 (per round and body size; 64 KiB runs a quarter),
// UPBENCH_ROUNDS=3, UPBENCH_CONCURRENCY=8, UPBENCH_ORIGIN=http://127.0.0.1:PORT (an origin serving
// /1k and /64k; default: a node:http origin started here as a child process).
import { type ChildProcess, spawn } from 'node:child_process';
import { Pool } from 'undici';
import { Exchange, type ExchangeFailure } from '../proxy/upstream/exchange.js';
import { UpstreamPool, parseTarget } from '../proxy/upstream/pool.js';
import type { ResponseHead } from '../proxy/upstream/response-head.js';

const REQUESTS = Number(process.env.UPBENCH_REQUESTS ?? 20000);
const ROUNDS = Number(process.env.UPBENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.UPBENCH_CONCURRENCY ?? 8);

const ORIGIN_SOURCE = `
const http = require('node:http');
const bodies = { '/1k': Buffer.alloc(1024, 97), '/64k': Buffer.alloc(65536, 98) };
const server = http.createServer((req, res) => {
  const b = bodies[req.url] ?? Buffer.alloc(0);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.length });
  res.end(b);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

async function startOrigin(): Promise<{ url: string; child: ChildProcess | undefined }> {
  if (process.env.UPBENCH_ORIGIN) return { url: process.env.UPBENCH_ORIGIN, child: undefined };
  const child = spawn(process.execPath, ['-e', ORIGIN_SOURCE], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve) => child.stdout?.once('data', (d: Buffer) => resolve(d.toString().trim())));
  return { url: `http://127.0.0.1:${port}`, child };
}

/** One GET through our client; resolves at the response's end. */
class Get extends Exchange {
  private resolve!: () => void;
  private reject!: (e: Error) => void;
  constructor(pool: UpstreamPool, head: string) {
    super(pool);
    const done = new Promise<void>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.done = done;
    this.send(head, undefined, false, false, false);
  }
  readonly done: Promise<void>;
  protected onHead(_head: ResponseHead): void {}
  protected onBody(_chunk: Buffer): void {}
  protected onComplete(): void {
    this.resolve();
  }
  protected onFailure(f: ExchangeFailure): void {
    this.reject(f.err);
  }
}

type Client = (path: string) => Promise<void>;

function ours(url: string): { get: Client; close: () => void } {
  const target = parseTarget(url);
  const pool = new UpstreamPool(target, { connectMs: 5000, responseMs: 60000 });
  return {
    get: (path) => new Get(pool, `GET ${path} HTTP/1.1\r\nHost: ${target.hostHeader}\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n`).done,
    close: () => pool.close(),
  };
}

function undiciPool(url: string): { get: Client; close: () => void } {
  const pool = new Pool(url, { connections: CONCURRENCY, pipelining: 1, keepAliveTimeout: 4000 });
  return {
    get: async (path) => {
      const { body } = await pool.request({ path, method: 'GET', headers: { 'user-agent': 'bench', accept: '*/*' } });
      for await (const _chunk of body) {
        // discard
      }
    },
    close: () => void pool.close(),
  };
}

/** CPU microseconds per request for `n` requests at CONCURRENCY. */
async function run(get: Client, path: string, n: number): Promise<number> {
  let left = n;
  const worker = async (): Promise<void> => {
    while (left-- > 0) await get(path);
  };
  const c0 = process.cpuUsage();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function main(): Promise<void> {
  const origin = await startOrigin();
  try {
    const clients = { sidecar: ours(origin.url), undici: undiciPool(origin.url) };
    for (const [path, n] of [['/1k', REQUESTS], ['/64k', Math.max(1, Math.floor(REQUESTS / 4))]] as const) {
      const samples: Record<string, number[]> = { sidecar: [], undici: [] };
      for (const c of Object.values(clients)) await run(c.get, path, Math.min(2000, n)); // warm-up
      for (let r = 0; r < ROUNDS; r++) {
        // Interleaved, so drift on a busy machine hits both alike.
        for (const [name, c] of Object.entries(clients)) samples[name]?.push(await run(c.get, path, n));
      }
      const s = median(samples.sidecar ?? []);
      const u = median(samples.undici ?? []);
      console.log(`${path.padEnd(5)} ${n} req x ${ROUNDS}  sidecar client ${s.toFixed(1)} us/req  undici Pool ${u.toFixed(1)} us/req  ratio ${(s / u).toFixed(2)}`);
    }
    for (const c of Object.values(clients)) c.close();
  } finally {
    origin.child?.kill();
  }
}

await main();
