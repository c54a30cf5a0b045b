// Logging: pino JSON lines on stdout. Two helpers fix the shape of the lines
// operators grep for: the startup summary and the per-connection close line.
// `redact` censors secret-looking fields wherever a careless caller puts them;
// the helpers themselves never log key material, only paths and subjects.

import { pino, type DestinationStream, type Logger } from 'pino';
import type { LoadedConfig } from './config/load.js';
import type { LogLevel } from './config/schema.js';

export type { Logger } from 'pino';

/** Field names that may hold secrets, at the top level and up to two levels down. */
const SECRET_FIELDS = [
  'key',
  'privateKey',
  'passphrase',
  'password',
  'secret',
  'masterSecret',
  'trafficSecret',
  'token',
  'authorization',
  'cookie',
  'iv',
  'salt',
];

export const REDACT_PATHS: readonly string[] = [
  ...SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]),
  'req.headers["proxy-authorization"]',
  'headers["proxy-authorization"]',
  '*.headers["proxy-authorization"]',
  'req.headers["set-cookie"]',
  'res.headers["set-cookie"]',
];

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** Where lines go; stdout (fd 1, synchronous) by default. Tests pass a stream. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { name: 'ktls-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...REDACT_PATHS], censor: '[Redacted]' },
      // Level as a word ("info"), which log pipelines match more reliably than 30.
      formatters: { level: (label) => ({ level: label }) },
    },
    // Synchronous stdout: a sidecar's last lines before exit must not be lost.
    options.destination ?? pino.destination({ dest: 1, sync: true }),
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
  /** The error that ended the connection, if any (logged as its code and message only). */
  readonly error?: unknown;
  /**
   * The record layer's own account (logged as `ktls_info`): where records and
   * bytes were protected (kernel / userspace), the decision, KeyUpdates,
   * close_notify. Flat scalars only; never key material.
   */
  readonly ktlsInfo?: Readonly<Record<string, string | number | boolean | null>> | undefined;
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
  if (f.error !== undefined) {
    // Only code + message: a full error object could drag request data along.
    const e = f.error as { code?: unknown; message?: unknown };
    line['error'] = { code: typeof e.code === 'string' ? e.code : undefined, message: typeof e.message === 'string' ? e.message : typeof f.error === 'string' ? f.error : 'error' };
  }
  logger.info(line, 'connection closed');
}
