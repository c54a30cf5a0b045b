// A test upstream (HTTP/1.1 + WebSocket echo) recording what it received.
//   /headers        → JSON of the request headers it saw
//   /echo           → the request body streamed back
//   /sha            → sha256 + length of the request body (JSON)
//   /bytes?n=N      → N deterministic bytes, chunked (no content-length)
//   /slow?ms=M      → answers after M ms ("slow")
//   /hop            → a response carrying hop-by-hop headers
//   ws upgrade      → echoes every message with an "echo:" prefix
import { createHash } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

export interface TestUpstream {
  port: number;
  url: string;
  /** Requests seen, in order. */
  seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; httpVersion: string }>;
  close(): Promise<void>;
}

/** Deterministic pseudo-random bytes (same n → same bytes), for sha checks. */
export function patternBytes(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A port nothing listens on (bound, then closed): an upstream that is down. */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function startUpstream(): Promise<TestUpstream> {
  const seen: TestUpstream['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, httpVersion: req.httpVersion });
    const u = new URL(req.url ?? '/', 'http://x');
    switch (u.pathname) {
      case '/headers': {
        req.resume();
        const body = JSON.stringify(req.headers);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      case '/echo':
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        req.pipe(res);
        return;
      case '/sha': {
        const h = createHash('sha256');
        let n = 0;
        req.on('data', (d: Buffer) => {
          n += d.length;
          h.update(d);
        });
        req.on('end', () => {
          const body = JSON.stringify({ sha256: h.digest('hex'), length: n, te: req.headers['transfer-encoding'] ?? null });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        });
        return;
      }
      case '/bytes': {
        req.resume();
        const n = Number(u.searchParams.get('n') ?? '0');
        const data = patternBytes(n, 7);
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        // Several writes, no content-length: the client sees a chunked stream.
        const step = 64 * 1024;
        let off = 0;
        const pump = (): void => {
          while (off < data.length) {
            const ok = res.write(data.subarray(off, off + step));
            off += step;
            if (!ok) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
        return;
      }
      case '/slow': {
        req.resume();
        const ms = Number(u.searchParams.get('ms') ?? '1000');
        const t = setTimeout(() => {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 });
          res.end('slow\n');
        }, ms);
        res.on('close', () => clearTimeout(t));
        return;
      }
      case '/hop':
        req.resume();
        res.writeHead(200, {
          'content-type': 'text/plain',
          'content-length': 3,
          connection: 'keep-alive, x-upstream-private',
          'x-upstream-private': 'secret',
          'keep-alive': 'timeout=5',
          'proxy-connection': 'keep-alive',
          'x-end-to-end': 'yes',
        });
        res.end('hop');
        return;
      default:
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 });
        res.end('ok\n');
    }
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer, isBinary) => ws.send(isBinary ? data : `echo:${data.toString('utf8')}`));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({
        port,
        url: `http://127.0.0.1:${port}`,
        seen,
        close: () =>
          new Promise<void>((r) => {
            wss.close();
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
