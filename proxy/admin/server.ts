// The admin server: plain HTTP on its own port (loopback by default), never
// on the TLS listener. GET /healthz, GET /readyz, GET /metrics, GET|PUT /ktls.
// Reads are open to whoever reaches the port (the kubelet probes and
// Prometheus scrapes the pod IP); anything that changes state is accepted from
// loopback peers only, so binding admin.host to a pod IP does not hand the
// kTLS flag to everyone who can reach the pod. With `workers: N` the primary
// serves it for the pod (`pod` below): health and metrics of every worker, and
// a PUT that reaches each of them.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIPv4 } from 'node:net';
import type { Registry } from 'prom-client';
import { ErrorCodes, SidecarError } from '../errors.js';
import type { KtlsFlag } from '../ktls/flag.js';
import type { SidecarEvents } from '../observe/events.js';
import type { Readiness } from '../readiness.js';

/** The logger calls the admin server makes (a pino Logger fits). */
export interface AdminLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What the primary of `workers: N` answers for the whole pod (proxy/workers/primary.ts). */
export interface PodAdmin {
  /** GET /healthz: ok while at least one worker is up. */
  health(): { ok: boolean; running: number };
  /** GET /metrics: one exposition, the workers' registries aggregated with the primary's. */
  metrics(): Promise<{ text: string; contentType: string }>;
  /** After PUT /ktls set the primary's flag: send it to every worker; how many applied it in time. */
  broadcastFlag(enabled: boolean): Promise<{ workers: number; acked: number }>;
}

export interface AdminServerOptions {
  readonly host: string;
  /** 0 = any free port (see `AdminServer.port`). */
  readonly port: number;
  readonly registry: Registry;
  readonly flag: KtlsFlag;
  readonly readiness: () => Promise<Readiness>;
  readonly logger?: AdminLogger;
  readonly metrics?: Pick<SidecarEvents, 'adminRequestRefused'>;
  /** Set in the primary of `workers: N`: the pod's answers instead of this process's own. */
  readonly pod?: PodAdmin;
  /** Clock for the refusal log's rate limit (tests). */
  readonly now?: () => number;
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

/** Methods that only read; every other method may change state and is loopback-only. */
const READ_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

/** At most one refusal log line per this interval; the rest are counted in it. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Close the connection after the reply (an unread body makes it useless for keep-alive). */
    readonly close = false,
  ) {
    super(message);
  }
}

/**
 * True for a loopback peer: 127.0.0.0/8, ::1, and their IPv4-mapped form
 * (::ffff:127.0.0.1, what a dual-stack `::` listener reports for 127.0.0.1).
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.toLowerCase();
  const mapped = a.startsWith('::ffff:') ? a.slice('::ffff:'.length) : a;
  if (isIPv4(mapped)) return mapped.split('.')[0] === '127';
  return a === '::1' || a === '0:0:0:0:0:0:0:1';
}

/**
 * Refuses state-changing requests from non-loopback peers: counts every one,
 * logs the first and then at most one line a minute (with how many were
 * refused meanwhile), so a client hammering the port cannot flood the log.
 */
function mutationGuard(options: AdminServerOptions): (req: IncomingMessage, method: string, path: string) => void {
  const now = options.now ?? Date.now;
  let lastLogAt = -Infinity;
  let unlogged = 0;
  return (req, method, path) => {
    const remote = req.socket.remoteAddress;
    if (READ_METHODS.has(method) || isLoopbackAddress(remote)) return;
    options.metrics?.adminRequestRefused('not_loopback');
    unlogged++;
    if (now() - lastLogAt >= REFUSAL_LOG_INTERVAL_MS) {
      options.logger?.warn(
        { event: 'admin_refused', method, path, remote, refused: unlogged },
        `admin: ${method} ${path} from ${remote ?? 'unknown'} refused: state changes are accepted from loopback only`,
      );
      lastLogAt = now();
      unlogged = 0;
    }
    throw new HttpError(
      403,
      `${method} ${path} is accepted from loopback only (this request came from ${remote ?? 'an unknown address'}); ` +
        'send it from inside the pod (kubectl port-forward, or kubectl exec <pod> -- curl -X PUT localhost:<admin port>/ktls)',
      true,
    );
  };
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
        reject(new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`, true));
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
  const guardMutation = mutationGuard(options);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const method = req.method ?? 'GET';
    // Before routing: a remote peer learns nothing about which mutations exist.
    guardMutation(req, method, path);
    const allowed = ROUTES[path];
    if (!allowed) throw new HttpError(404, `no such endpoint: ${path} (try /healthz, /readyz, /metrics, /ktls)`);
    if (!allowed.includes(method)) {
      res.setHeader('allow', allowed.join(', '));
      throw new HttpError(405, `${method} not allowed on ${path} (allowed: ${allowed.join(', ')})`);
    }
    switch (path) {
      case '/healthz': {
        const pod = options.pod?.health();
        if (pod) send(res, pod.ok ? 200 : 503, { status: pod.ok ? 'ok' : 'no_worker', workers_running: pod.running });
        else send(res, 200, { status: 'ok' });
        return;
      }
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
        const { text, contentType } = options.pod ? await options.pod.metrics() : { text: await registry.metrics(), contentType: registry.contentType };
        res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      case '/ktls': {
        if (method === 'PUT') {
          const enabled = parseFlagBody(await readBody(req));
          const { changed, state } = flag.set(enabled, 'admin');
          logger?.info({ ktls_enabled: enabled, changed, remote: req.socket.remoteAddress }, 'PUT /ktls');
          if (options.pod) {
            // Answered once every worker applied it (or the wait ended): a 200 means new connections see it.
            const { workers, acked } = await options.pod.broadcastFlag(enabled);
            send(res, acked > 0 ? 200 : 503, { ...state, changed, workers, acked });
            return;
          }
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
        if (!res.headersSent) send(res, err.status, { error: err.message }, err.close ? { connection: 'close' } : {});
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
