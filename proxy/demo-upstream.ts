// The built-in upstream of `--demo`: a tiny HTTP/1.1 app on loopback so the
// quickstart answers without anything else running. GET answers a greeting
// with what the sidecar forwarded; other methods echo the request body.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface DemoUpstream {
  /** Bound port (the URL's port, or a free one when the URL says 0). */
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

export function startDemoUpstream(upstreamUrl: string): Promise<DemoUpstream> {
  const u = new URL(upstreamUrl);
  // Loopback only, whatever the URL host says: the demo app must never be reachable from outside.
  const host = '127.0.0.1';
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' || req.method === 'HEAD') {
      const lines = [
        'Hello from the ktls-sidecar demo upstream.',
        `method=${req.method} path=${req.url ?? '/'} http=${req.httpVersion}`,
        `x-forwarded-for=${String(req.headers['x-forwarded-for'] ?? '')}`,
        `x-forwarded-proto=${String(req.headers['x-forwarded-proto'] ?? '')}`,
        `x-forwarded-host=${String(req.headers['x-forwarded-host'] ?? '')}`,
        '',
      ];
      const body = lines.join('\n');
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
    req.pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(u.port || 80), host, () => {
      server.off('error', reject);
      const port = (server.address() as AddressInfo).port;
      resolve({
        port,
        url: `http://${host}:${port}`,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
