// The admin server: plain HTTP on its own port (loopback by default), never
// on the TLS listener. GET /healthz, GET /readyz, GET /metrics, GET|PUT /ktls.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { ErrorCodes, SidecarError } from '../errors.js';
import type { KtlsFlag } from './flag.js';

export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: string;
}

export interface Readiness {
  readonly ready: boolean;
  readonly checks: readonly ReadinessCheck[];
}

/** The logger calls the admin server makes (a pino Logger fits). */
export interface AdminLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AdminServerOptions {
  readonly host: string;
  /** 0 = any free port (see `AdminServer.port`). */
  readonly port: number;
  readonly registry: Registry;
  readonly flag: KtlsFlag;
  readonly readiness: () => Promise<Readiness>;
  readonly logger?: AdminLogger;
}

export interface AdminServer {
  readonly host: string;
  /** The bound port. */
  readonly port: number;
  /** `http://host:port` */
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/** Largest PUT /ktls body accepted; the only valid body is a few bytes. */
const MAX_BODY_BYTES = 4096;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      if (tooLarge) return; // discard the rest; the 413 is already on its way
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        chunks.length = 0;
        reject(new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** `{"enabled": true|false}` and nothing else. */
function parseFlagBody(text: string): boolean {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body must be JSON: {"enabled": true} or {"enabled": false}');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, 'body must be a JSON object: {"enabled": true} or {"enabled": false}');
  }
  const rec = body as Record<string, unknown>;
  const extra = Object.keys(rec).filter((k) => k !== 'enabled');
  if (extra.length > 0) throw new HttpError(400, `unknown field(s) ${extra.map((k) => JSON.stringify(k)).join(', ')}; only "enabled" is accepted`);
  if (typeof rec['enabled'] !== 'boolean') throw new HttpError(400, '"enabled" must be true or false');
  return rec['enabled'];
}

const ROUTES: Record<string, readonly string[]> = {
  '/healthz': ['GET', 'HEAD'],
  '/readyz': ['GET', 'HEAD'],
  '/metrics': ['GET', 'HEAD'],
  '/ktls': ['GET', 'HEAD', 'PUT'],
};

export function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { registry, flag, readiness, logger } = options;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const allowed = ROUTES[path];
    if (!allowed) throw new HttpError(404, `no such endpoint: ${path} (try /healthz, /readyz, /metrics, /ktls)`);
    const method = req.method ?? 'GET';
    if (!allowed.includes(method)) {
      res.setHeader('allow', allowed.join(', '));
      throw new HttpError(405, `${method} not allowed on ${path} (allowed: ${allowed.join(', ')})`);
    }
    switch (path) {
      case '/healthz':
        send(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        let r: Readiness;
        try {
          r = await readiness();
        } catch (err) {
          r = { ready: false, checks: [{ name: 'readiness', ok: false, detail: (err as Error).message }] };
        }
        const failing = r.checks.filter((c) => !c.ok);
        send(res, r.ready ? 200 : 503, { ready: r.ready, failing, checks: r.checks });
        return;
      }
      case '/metrics': {
        const text = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      case '/ktls': {
        if (method === 'PUT') {
          const enabled = parseFlagBody(await readBody(req));
          const { changed, state } = flag.set(enabled, 'admin');
          logger?.info({ ktls_enabled: enabled, changed, remote: req.socket.remoteAddress }, 'PUT /ktls');
          send(res, 200, { ...state, changed });
          return;
        }
        send(res, 200, flag.state());
        return;
      }
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        // After a 413 the unread body makes the connection useless for keep-alive.
        if (!res.headersSent) send(res, err.status, { error: err.message }, err.status === 413 ? { connection: 'close' } : {});
        return;
      }
      logger?.error({ err }, 'admin request failed');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  // The admin port is for probes and scrapes: short keep-alive, small headers.
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new SidecarError(ErrorCodes.ADMIN, `admin server cannot listen on ${options.host}:${options.port} (${err.code ?? err.message})`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      server.on('error', (err) => logger?.error({ err }, 'admin server error'));
      const addr = server.address() as AddressInfo;
      const hostForUrl = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      logger?.info({ address: `${hostForUrl}:${addr.port}` }, 'admin server listening');
      resolve({
        host: addr.address,
        port: addr.port,
        url: `http://${hostForUrl}:${addr.port}`,
        server,
        close: () =>
          new Promise<void>((res, rej) => {
            server.close((err) => (err ? rej(err) : res()));
            server.closeIdleConnections();
          }),
      });
    });
  });
}
