// Logging: pino JSON lines on stdout. Two helpers fix the shape of the lines
// operators grep for: the startup summary and the per-connection close line.
// censorSecrets() censors secret-looking fields wherever a careless caller puts
// them; the helpers themselves never log key material, only paths and subjects.
// Errors go under `err` (pino's standard serializer: type, message, stack, code).

import { pino, type DestinationStream, type Logger } from 'pino';
import type { LoadedConfig } from './config/load.js';
import type { LogLevel } from './config/schema.js';

export type { Logger } from 'pino';

/**
 * Field names that may hold secrets (compared case-insensitively), at any of
 * the first CENSOR_DEPTH levels of a line: `key`, `tls.key`, `req.headers.cookie`.
 */
export const SECRET_FIELDS: ReadonlySet<string> = new Set([
  'key',
  'privatekey',
  'passphrase',
  'password',
  'secret',
  'mastersecret',
  'trafficsecret',
  'token',
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'iv',
  'salt',
]);
export const CENSOR_DEPTH = 4;
const CENSORED = '[Redacted]';

const isSecret = (k: string): boolean => SECRET_FIELDS.has(k) || SECRET_FIELDS.has(k.toLowerCase());

/**
 * `value` with every secret-looking field at depth < CENSOR_DEPTH replaced by
 * "[Redacted]". Copy on write: an object without such a field is returned as
 * is (no allocation, the common case), and the caller's objects are never
 * changed. An Error holding one becomes its standard serialization, censored.
 * Buffers and typed arrays are not walked (their keys are their bytes).
 *
 * Why not pino's `redact`: its wildcard paths (`*.key`, `*.*.key` for every
 * name) cost ~10x a line without them (bench/log-cost.ts); this walk costs
 * about what a top-level path list does and reaches deeper.
 */
export function censorSecrets<T>(value: T, depth = 0): T {
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const c = depth + 1 < CENSOR_DEPTH ? censorSecrets(v, depth + 1) : v;
      if (c !== v) (out ??= value.slice())[i] = c;
    }
    return (out ?? value) as T;
  }
  const obj = value as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    let c: unknown = v;
    if (isSecret(k)) c = CENSORED;
    else if (depth + 1 < CENSOR_DEPTH && typeof v === 'object' && v !== null) c = censorSecrets(v, depth + 1);
    if (c !== v) (out ??= value instanceof Error ? pino.stdSerializers.err(value) : { ...obj })[k] = c;
  }
  return (out ?? value) as T;
}

/** Most bytes of log lines held for a slow stdout before new lines are dropped (never an unbounded heap). */
export const LOG_BUFFER_MAX_BYTES = 16 * 1024 * 1024;
/**
 * The most one write(2) carries: Linux's PIPE_BUF. A write of at most
 * PIPE_BUF bytes to a pipe is atomic, and each write is whole lines, so the
 * processes of `workers: N`, which share the container's stdout pipe, never
 * interleave inside a line (a single line longer than this is written alone).
 */
export const LOG_WRITE_MAX_BYTES = 4096;
/** Bytes gathered before a write, and the longest a line waits for them. */
export const LOG_WRITE_MIN_BYTES = 2048;
export const LOG_FLUSH_INTERVAL_MS = 100;

/**
 * Stdout for the log: asynchronous (the event loop never waits for a slow log
 * reader), lines gathered up to LOG_WRITE_MIN_BYTES or LOG_FLUSH_INTERVAL_MS
 * and written in whole lines of at most LOG_WRITE_MAX_BYTES per write(2);
 * written synchronously at exit (pino registers the final flushSync on
 * `exit`, so the last line before process.exit() is kept). Past `maxBytes`
 * waiting, new lines are dropped and counted, and once writes move again one
 * `log_lines_dropped` line says how many. (`fd`, `maxBytes`: bench/log-cost.ts
 * and the tests.)
 */
export function stdoutDestination(fd = 1, maxBytes = LOG_BUFFER_MAX_BYTES): DestinationStream {
  const dest = pino.destination({
    dest: fd,
    sync: false,
    minLength: LOG_WRITE_MIN_BYTES,
    maxWrite: LOG_WRITE_MAX_BYTES,
    periodicFlush: LOG_FLUSH_INTERVAL_MS,
    maxLength: maxBytes,
  });
  let dropped = 0;
  let noticing = false;
  dest.on('drop', () => {
    if (!noticing) dropped++;
  });
  // After each completed write there is room again: say what was lost (unless the notice itself is dropped).
  dest.on('write', () => {
    if (dropped === 0) return;
    const line = { level: 'warn', time: new Date().toISOString(), name: 'ktls-sidecar', event: 'log_lines_dropped', lines: dropped, max_bytes: maxBytes };
    noticing = true;
    let kept = true;
    const onDrop = (): void => void (kept = false);
    dest.once('drop', onDrop);
    dest.write(`${JSON.stringify({ ...line, msg: 'stdout was not read fast enough: log lines dropped' })}\n`);
    dest.off('drop', onDrop);
    noticing = false;
    if (kept) dropped = 0;
  });
  return dest;
}

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** Where lines go; stdout (stdoutDestination()) by default. Tests pass a stream. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { name: 'ktls-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // An Error gets the standard serialization; anything else under `err` is
      // already a summary in that shape (the close line, the crash guard) and
      // stays as it is (the standard one would rename its `type` to "Object").
      serializers: { err: (e: unknown) => (e instanceof Error ? pino.stdSerializers.err(e) : e) },
      formatters: {
        // Level as a word ("info"), which log pipelines match more reliably than 30.
        level: (label) => ({ level: label }),
        log: (obj) => censorSecrets(obj),
        bindings: (b) => censorSecrets(b),
      },
    },
    options.destination ?? stdoutDestination(),
  );
}

export interface ListenerInfo {
  /** `tls`, `admin`, `demo-upstream`… */
  readonly name: string;
  /** `host:port` as bound (after port 0 resolved). */
  readonly address: string;
}

/** The startup kernel probe as the startup line reports it. */
export interface KernelProbeSummary {
  /** `uname -r`. */
  readonly release?: string;
  readonly available: boolean;
  /** Why kTLS is unavailable (probe reason label), null when available. */
  readonly reason?: string | null;
  /** One human sentence for `reason`. */
  readonly detail?: string | null;
  /** TLS 1.3 KeyUpdate can be followed in the kernel. */
  readonly rekey?: boolean;
  /** `TLSv1.3 AES_GCM_128 tx+rx`, … for every supported version × cipher. */
  readonly ciphers?: readonly string[];
  readonly native?: boolean;
}

const DAY_MS = 86_400_000;
/** Certificates closer to expiry than this get a warning at startup. */
export const CERT_EXPIRY_WARNING_DAYS = 14;

/**
 * The startup summary: one `info` line with config sources, listeners, mode,
 * upstream, certificates (subject, expiry) and kTLS settings; plus a `warn`
 * line for demo mode and for each certificate that is expired or near expiry.
 */
export function logStartupSummary(
  logger: Logger,
  facts: {
    config: LoadedConfig;
    listeners: readonly ListenerInfo[];
    /** Result of the kernel probe, if known (see KernelProbeSummary). */
    kernel?: KernelProbeSummary;
    /** Subject of the generated demo certificate, when demo mode made one. */
    demoCertificate?: string;
    now?: number;
  },
): void {
  const { config } = facts;
  const now = facts.now ?? Date.now();
  const certificates = config.certificates.map((c) => ({
    servername: c.servername,
    subject: c.subject,
    path: c.path,
    not_after: new Date(c.notAfterMs).toISOString(),
    days_left: Math.floor((c.notAfterMs - now) / DAY_MS),
  }));
  logger.info(
    {
      event: 'startup',
      config_sources: config.sources.map((s) => (s.layer === 'file' ? { layer: s.layer, path: s.path, keys: s.keys } : { layer: s.layer, keys: s.keys })),
      config_file: config.file,
      mode: config.mode,
      upstream: config.mode === 'tcp' ? `${config.upstream.address} (proxy protocol ${config.upstream.proxyProtocol})` : config.upstream.url,
      listeners: facts.listeners.map((l) => ({ name: l.name, address: l.address })),
      certificates,
      mtls: config.tls.clientCA === '' ? 'off' : config.tls.requestCert ? 'required' : 'optional',
      ktls: {
        enabled: config.ktls.enabled,
        direction: config.ktls.direction,
        sample_rate: config.ktls.sampleRate,
        ciphers: config.ktls.ciphers.map((c) => (c.direction === config.ktls.direction ? c.iana : `${c.iana}:${c.direction}`)),
        kernel: facts.kernel ?? null,
      },
      demo: config.demo,
      log: { level: config.log.level, connections: config.log.connections },
    },
    'ktls-sidecar started',
  );
  if (config.demo) {
    logger.warn(
      { event: 'demo_mode', demo_certificate: facts.demoCertificate ?? null },
      'DEMO MODE: self-signed in-memory certificate and built-in demo upstream; do not use in production',
    );
  }
  for (const c of certificates) {
    if (c.days_left < CERT_EXPIRY_WARNING_DAYS) {
      logger.warn(
        { event: 'cert_expiry', servername: c.servername, subject: c.subject, not_after: c.not_after, days_left: c.days_left },
        c.days_left < 0 ? 'certificate has expired' : 'certificate expires soon',
      );
    }
  }
}

/** What the connection close line reports. Never secrets: names, counts, reasons. */
export interface ConnectionCloseFacts {
  readonly id?: number | string;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly servername?: string | null | false | undefined;
  /** http1 | h2 | tcp | none */
  readonly protocol: string;
  readonly tlsVersion?: string | null | undefined;
  /** IANA name. */
  readonly cipher?: string | null | undefined;
  readonly alpn?: string | null | false | undefined;
  /** Application bytes from the client. */
  readonly bytesIn: number;
  /** Application bytes to the client. */
  readonly bytesOut: number;
  readonly durationMs: number;
  readonly closeReason: string;
  readonly ktls: 'on' | 'off';
  readonly ktlsReason: string;
  readonly direction?: string | undefined;
  /** The error that ended the connection, if any (logged as `err`: its type, code and message only). */
  readonly error?: unknown;
  /**
   * The record layer's own account (logged as `ktls_info`): where records and
   * bytes were protected (kernel / userspace), the decision, KeyUpdates,
   * close_notify. Flat scalars only; never key material.
   */
  readonly ktlsInfo?: Readonly<Record<string, string | number | boolean | null>> | undefined;
}

/**
 * An error as the standard serializer names its fields (`type`, `message`,
 * `code`), without the stack or other properties: a close line is written per
 * connection, and a full error object could drag request data along.
 */
function errorSummary(error: unknown): { type: string; message: string; code?: string } {
  if (typeof error === 'string') return { type: 'string', message: error };
  const e = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown; message?: unknown };
  const out: { type: string; message: string; code?: string } = {
    type: error instanceof Error ? error.constructor.name : typeof error,
    message: typeof e.message === 'string' ? e.message : 'error',
  };
  if (typeof e.code === 'string') out.code = e.code;
  return out;
}

/**
 * One `info` line per closed connection (`event: "connection_closed"`),
 * written by the close-log observer (proxy/observe/close-log.ts).
 */
export function logConnectionClose(logger: Logger, f: ConnectionCloseFacts): void {
  const line: Record<string, unknown> = {
    event: 'connection_closed',
    remote: f.remoteAddress === undefined ? null : f.remotePort === undefined ? f.remoteAddress : `${f.remoteAddress}:${f.remotePort}`,
    servername: f.servername || null,
    protocol: f.protocol,
    tls_version: f.tlsVersion ?? null,
    cipher: f.cipher ?? null,
    alpn: f.alpn || null,
    bytes_in: f.bytesIn,
    bytes_out: f.bytesOut,
    duration_ms: Math.round(f.durationMs),
    close_reason: f.closeReason,
    ktls: f.ktls,
    ktls_reason: f.ktlsReason,
    direction: f.direction ?? (f.ktls === 'on' ? null : 'none'),
  };
  if (f.ktlsInfo !== undefined) {
    // Scalars only, so nothing structured (a Buffer, a key object) can ride along.
    const info: Record<string, string | number | boolean | null> = {};
    for (const [k, v] of Object.entries(f.ktlsInfo)) {
      if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') info[k] = v;
    }
    line['ktls_info'] = info;
  }
  if (f.id !== undefined) line['conn'] = f.id;
  if (f.error !== undefined) line['err'] = errorSummary(f.error);
  logger.info(line, 'connection closed');
}
