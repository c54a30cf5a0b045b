// The built-in upstream of `--demo`: a tiny HTTP/1.1 app on loopback so the
// quickstart answers without anything else running. GET answers a greeting
// with what the sidecar forwarded; other methods echo the request body.
// It listens on the port upstream.url names (default 8080, where a real app
// often is already): when it cannot, the error says which port, why, and which
// key to change, instead of a bare EADDRINUSE.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from './errors.js';

export interface DemoUpstream {
  /** Bound port (the URL's port, or a free one when the URL says 0). */
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Why the demo upstream could not listen on `host:port`, as a ConfigError naming upstream.url. */
export function demoListenError(err: unknown, upstreamUrl: string, host: string, port: number): ConfigError {
  const code = (err as { code?: unknown } | null)?.code;
  const why =
    code === 'EADDRINUSE'
      ? 'is already in use (EADDRINUSE)'
      : code === 'EACCES'
        ? 'is a privileged port (EACCES: below 1024 needs CAP_NET_BIND_SERVICE)'
        : `cannot be listened on (${typeof code === 'string' ? code : err instanceof Error ? err.message : String(err)})`;
  return new ConfigError(
    'upstream.url',
    `in demo mode the built-in upstream listens on the port of upstream.url (${JSON.stringify(upstreamUrl)}), and ${host}:${port} ${why}; ` +
      `pass --upstream-url http://127.0.0.1:0 (KTLS_SIDECAR_UPSTREAM_URL) for any free port, or name another free port`,
    { cause: err },
  );
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
  const wanted = Number(u.port || 80);
  return new Promise((resolve, reject) => {
    const failed = (err: unknown): void => reject(demoListenError(err, upstreamUrl, host, wanted));
    server.once('error', failed);
    server.listen(wanted, host, () => {
      server.off('error', failed);
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
