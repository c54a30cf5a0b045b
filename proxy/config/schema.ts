// The configuration schema: every key, its default, format and meaning. Key
// names are public contract (config files, env names and flags derive from
// them); docs/config.md and config/default.yaml are checked against this file
// by test/unit/config-defaults.test.ts.

import { TLS_VERSIONS, type KernelCipher, type TlsVersion } from '../../native/crypto-info.js';
import { KTLS_DIRECTION_SETTINGS, PROXY_PROTOCOL_MODES, type KtlsDirectionSetting, type ProxyProtocolMode } from '../vocabulary.js';
import { DEFAULT_KTLS_CIPHERS } from '../ktls/cipher-policy.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `log.connections` as written: `all`, `errors`, `off` or `sample:<rate>`. */
export type LogConnections = 'all' | 'errors' | 'off' | `sample:${string}`;

/** What `log.connections` means: the share of normal closes that get a close line, and whether failures do. */
export interface ConnectionLogPolicy {
  /** 0..1: 1 = every normal close, 0 = none. */
  readonly normal: number;
  readonly failures: boolean;
}

/** Parse `log.connections`; a string is the reason it is not valid (the config check names the key). */
export function parseLogConnections(v: unknown): ConnectionLogPolicy | string {
  if (v === 'all') return { normal: 1, failures: true };
  if (v === 'errors') return { normal: 0, failures: true };
  if (v === 'off') return { normal: 0, failures: false };
  const m = typeof v === 'string' ? /^sample:(\S+)$/.exec(v.trim()) : null;
  const rate = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!Number.isFinite(rate) || rate <= 0 || rate > 1) return 'must be all, errors, off or sample:<rate> with 0 < rate <= 1';
  return { normal: rate, failures: true };
}

/** Defaults of the TLS 1.2 list: ECDHE key exchange with AEAD ciphers only. */
export const DEFAULT_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const DEFAULT_TLS13_CIPHERSUITES = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
].join(':');

/** One leaf of the schema (what convict needs plus nothing else). */
export interface SchemaLeaf {
  doc: string;
  format: string | readonly string[];
  default: unknown;
}

export interface SchemaTree {
  [key: string]: SchemaLeaf | SchemaTree;
}

/**
 * The schema, in the raw form written in config files: durations as `30s`,
 * sizes as numbers or `1MiB`. Loading turns them into milliseconds and bytes.
 */
export const schema = {
  listen: {
    host: { doc: 'Address the TLS listener binds to.', format: 'nonempty-string', default: '0.0.0.0' },
    port: { doc: 'Port of the TLS listener (0 = any free port).', format: 'tcp-port', default: 8443 },
  },
  mode: {
    doc: 'http: terminate TLS and proxy HTTP/1.1, WebSocket and HTTP/2 to upstream.url; tcp: terminate TLS and pipe bytes to upstream.address.',
    format: ['http', 'tcp'],
    default: 'http',
  },
  workers: {
    doc: 'Processes serving the TLS listener: auto (one per available CPU) or a whole number 1-64. With more than 1 a primary process supervises them and serves the admin port for the pod (docs/deploy.md, "Workers"); give the container that many CPUs.',
    format: 'workers',
    default: 1,
  },
  upstream: {
    url: { doc: 'Upstream base URL in http mode.', format: 'url', default: 'http://127.0.0.1:8080' },
    address: { doc: 'Upstream host:port in tcp mode.', format: 'host-port', default: '127.0.0.1:8080' },
    proxyProtocol: {
      doc: 'tcp mode: send a PROXY protocol v2 header (the client address) to the upstream before the first byte.',
      format: PROXY_PROTOCOL_MODES,
      default: 'off',
    },
    maxSockets: {
      doc: 'http mode: most connections open to the upstream at once (in use and idle keep-alive); requests beyond them wait for a free one (see upstream.maxPending).',
      format: 'count',
      default: 1024,
    },
    maxPending: {
      doc: 'http mode: most requests waiting for an upstream connection when upstream.maxSockets are busy; more are answered 503 at once (counted as upstream error overloaded).',
      format: 'count',
      default: 1024,
    },
  },
  demo: {
    doc: 'Quickstart mode: an in-memory self-signed certificate when tls.cert is empty, and a built-in demo upstream. Never for production.',
    format: 'strict-boolean',
    default: false,
  },
  tls: {
    cert: { doc: 'PEM certificate (chain) file of the default certificate. Required unless demo.', format: 'pem-path', default: '' },
    key: { doc: 'PEM private key file matching tls.cert (unencrypted). Required unless demo.', format: 'pem-path', default: '' },
    sni: {
      doc: 'Extra certificates chosen by SNI: a list of {servername, cert, key}; servername may start with "*." for a wildcard.',
      format: 'sni-list',
      default: [],
    },
    minVersion: { doc: 'Lowest TLS version accepted.', format: TLS_VERSIONS, default: 'TLSv1.2' },
    ciphers: { doc: 'TLS 1.2 cipher list (OpenSSL syntax).', format: 'nonempty-string', default: DEFAULT_TLS12_CIPHERS },
    ciphersuites: { doc: 'TLS 1.3 cipher suites (colon-separated IANA names).', format: 'nonempty-string', default: DEFAULT_TLS13_CIPHERSUITES },
    clientCA: { doc: 'PEM bundle of CAs for client certificates; setting it turns on mTLS.', format: 'pem-path', default: '' },
    requestCert: {
      doc: 'With tls.clientCA set: true rejects clients without a valid certificate; false asks for one but lets clients without it through.',
      format: 'strict-boolean',
      default: true,
    },
    clientCertHeader: {
      doc: 'Header that carries the verified client certificate to the upstream (http mode, mTLS); any value sent by the client is removed.',
      format: 'nonempty-string',
      default: 'x-forwarded-client-cert',
    },
    sessionTickets: { doc: 'Offer TLS session tickets (resumption).', format: 'strict-boolean', default: true },
  },
  admin: {
    host: { doc: 'Address of the admin server (/healthz, /readyz, /metrics, /ktls). Reads are served on it; changes (PUT /ktls) only from loopback peers. Keep it on loopback or a pod-private address.', format: 'nonempty-string', default: '127.0.0.1' },
    port: { doc: 'Port of the admin server (0 = any free port).', format: 'tcp-port', default: 9901 },
  },
  log: {
    level: { doc: 'Log level (pino).', format: LOG_LEVELS, default: 'info' },
    connections: {
      doc: 'Which connections get a connection_closed log line: `all`; `errors` (failed handshakes, refusals other than probes, connections that end in an error; docs/config.md, "Logs"); `sample:<rate>` (that share of the other connections, 0 < rate <= 1, plus every error); `off`. SIGHUP applies a change.',
      format: 'log-connections',
      default: 'errors',
    },
  },
  shutdown: {
    drainTimeout: { doc: 'On SIGTERM: how long open connections may finish before they are closed.', format: 'duration', default: '30s' },
  },
  timeouts: {
    handshake: { doc: 'Time from accept to a finished TLS handshake.', format: 'duration', default: '10s' },
    headers: { doc: 'Time to receive the complete request headers (http mode).', format: 'duration', default: '30s' },
    idle: { doc: 'Idle time after which a connection is closed.', format: 'duration', default: '60s' },
    upstreamConnect: { doc: 'Time to connect to the upstream.', format: 'duration', default: '5s' },
    upstreamResponse: { doc: 'Time to the first byte of the upstream response (http mode).', format: 'duration', default: '60s' },
    requestBody: {
      doc: 'http mode: longest time a request body may take to arrive in full; past it the request is answered 408 (or reset) and the upstream request aborted. 0 = no limit.',
      format: 'duration',
      default: '5m',
    },
  },
  limits: {
    maxConnections: { doc: 'Open client connections; more are refused (counted as rejected, reason limit).', format: 'count', default: 10000 },
    maxHeaderSize: { doc: 'Largest request header block, bytes (or 16KiB).', format: 'size', default: 16384 },
    maxHandshakeBufferBytes: { doc: 'Most bytes buffered per connection during the handshake.', format: 'size', default: 1048576 },
    maxConcurrentStreams: { doc: 'HTTP/2: most concurrent streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM.', format: 'count', default: 100 },
    minRequestBodyRate: {
      doc: 'http mode: slowest accepted request body, bytes per second, measured over each 10 s window after the first; a slower body is answered 408 (or reset) and the upstream request aborted. 0 = no minimum.',
      format: 'size',
      default: 1024,
    },
  },
  ktls: {
    enabled: {
      doc: 'Runtime flag: hand new connections to kernel TLS when the kernel and policy allow. Changed live by PUT /ktls, SIGHUP and the config watch.',
      format: 'strict-boolean',
      default: true,
    },
    direction: { doc: 'tx: kernel encrypts, userspace decrypts; txrx: the kernel does both.', format: KTLS_DIRECTION_SETTINGS, default: 'tx' },
    ciphers: {
      doc: 'Cipher suites allowed for kTLS (IANA or OpenSSL names); NAME:tx or NAME:txrx overrides ktls.direction for that suite. Env/flag form: comma-separated.',
      format: 'ktls-cipher-list',
      // The AES-GCM suites of TLS 1.3 and 1.2 (every kTLS kernel has them).
      default: [...DEFAULT_KTLS_CIPHERS],
    },
    sampleRate: { doc: 'Fraction of eligible connections handed to the kernel (canary); the rest get ktls_reason="sampled_out".', format: 'ratio', default: 1 },
    forceTls13Rx: {
      doc: 'Install TLS 1.3 RX even where the kernel cannot take a peer KeyUpdate (such connections are closed on KeyUpdate).',
      format: 'strict-boolean',
      default: false,
    },
    drainOnDisable: {
      doc: 'tcp mode, when the flag turns off: close open kTLS connections (at ktls.drainTimeout) or keep them until they end. HTTP kTLS connections always drain (Connection: close / GOAWAY).',
      format: ['close', 'keep'],
      default: 'keep',
    },
    drainTimeout: { doc: 'When the flag turns off: grace period before kTLS connections asked to drain are closed.', format: 'duration', default: '30s' },
    keyUpdateRateLimit: { doc: 'Most peer KeyUpdates per minute on one kTLS connection; more close it.', format: 'count', default: 10 },
    rxExpectNoPad: {
      doc: 'TLS 1.3 with RX in the kernel: let the kernel decrypt each record straight into the sidecar\'s buffer (TLS_RX_EXPECT_NO_PAD, Linux >= 6.0) instead of into a new kernel buffer it then copies. A record the client padded, and every control record, is decrypted a second time (TlsDecryptRetry, TlsRxNoPadViolation in /metrics). false: never.',
      format: 'strict-boolean',
      default: true,
    },
    splice: {
      doc: 'tcp mode: move bytes between the upstream socket and a kTLS connection with splice(2), in the kernel, wherever the kernel holds that direction (upstream to client with TX, client to upstream with RX): they never enter JS; http mode: the same for large response bodies (ktls.spliceMinBody). false keeps them on JS pipes. Userspace-TLS connections never splice.',
      format: 'strict-boolean',
      default: true,
    },
    spliceMinBody: {
      doc: 'http mode, with ktls.splice: an HTTP/1.1 response body with a Content-Length of at least this many bytes moves from the upstream socket into the client\'s kTLS TX with splice(2), never through JS (plain http:// upstreams; HTTP/2, chunked and smaller bodies stay in JS; ktls.splice: false keeps every body in JS).',
      format: 'size',
      default: 65536,
    },
  },
  config: {
    watch: { doc: 'Watch the --config file and apply ktls.enabled live when it changes (other keys need SIGHUP or a restart).', format: 'strict-boolean', default: true },
  },
} as const satisfies SchemaTree;

export type ProxyMode = (typeof schema.mode.format)[number];

export interface SniCertificate {
  readonly servername: string;
  /** Absolute path. */
  readonly cert: string;
  /** Absolute path. */
  readonly key: string;
}

/** One allowed kTLS suite, resolved: both names, the kernel cipher and the direction it gets. */
export interface KtlsCipherRule {
  readonly iana: string;
  readonly openssl: string;
  readonly version: TlsVersion;
  readonly kernelCipher: KernelCipher;
  /** The per-cipher override if given (`NAME:txrx`), else ktls.direction. */
  readonly direction: KtlsDirectionSetting;
}

/** The typed, validated configuration. Durations are milliseconds, sizes bytes, paths absolute ('' = unset). */
export interface Config {
  readonly listen: { readonly host: string; readonly port: number };
  readonly mode: ProxyMode;
  /** As configured: `auto` is resolved when the processes are started (proxy/workers/). */
  readonly workers: number | 'auto';
  readonly upstream: {
    readonly url: string;
    readonly address: string;
    readonly proxyProtocol: ProxyProtocolMode;
    readonly maxSockets: number;
    readonly maxPending: number;
  };
  readonly demo: boolean;
  readonly tls: {
    readonly cert: string;
    readonly key: string;
    readonly sni: readonly SniCertificate[];
    readonly minVersion: TlsVersion;
    readonly ciphers: string;
    readonly ciphersuites: string;
    readonly clientCA: string;
    readonly requestCert: boolean;
    readonly clientCertHeader: string;
    readonly sessionTickets: boolean;
  };
  readonly admin: { readonly host: string; readonly port: number };
  readonly log: { readonly level: LogLevel; readonly connections: LogConnections };
  readonly shutdown: { readonly drainTimeout: number };
  readonly timeouts: {
    readonly handshake: number;
    readonly headers: number;
    readonly idle: number;
    readonly upstreamConnect: number;
    readonly upstreamResponse: number;
    readonly requestBody: number;
  };
  readonly limits: {
    readonly maxConnections: number;
    readonly maxHeaderSize: number;
    readonly maxHandshakeBufferBytes: number;
    readonly maxConcurrentStreams: number;
    readonly minRequestBodyRate: number;
  };
  readonly ktls: {
    readonly enabled: boolean;
    readonly direction: KtlsDirectionSetting;
    readonly ciphers: readonly KtlsCipherRule[];
    readonly sampleRate: number;
    readonly forceTls13Rx: boolean;
    readonly drainOnDisable: (typeof schema.ktls.drainOnDisable.format)[number];
    readonly drainTimeout: number;
    readonly keyUpdateRateLimit: number;
    readonly rxExpectNoPad: boolean;
    readonly splice: boolean;
    readonly spliceMinBody: number;
  };
  readonly config: { readonly watch: boolean };
}

function isLeaf(node: SchemaLeaf | SchemaTree): node is SchemaLeaf {
  return Object.prototype.hasOwnProperty.call(node, 'default') && Object.prototype.hasOwnProperty.call(node, 'doc');
}

export interface KeyInfo {
  /** Dotted key, e.g. `shutdown.drainTimeout`. */
  readonly key: string;
  /** `KTLS_SIDECAR_SHUTDOWN_DRAIN_TIMEOUT`. */
  readonly env: string;
  /** `--shutdown-drain-timeout`. */
  readonly flag: string;
  readonly leaf: SchemaLeaf;
}

/** Split camelCase into words: `clientCA` → client, CA; `forceTls13Rx` → force, Tls13, Rx. */
function words(segment: string): string[] {
  return segment.replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/([A-Z])([A-Z][a-z])/g, '$1 $2').split(' ');
}

export const ENV_PREFIX = 'KTLS_SIDECAR_';

export function envName(key: string): string {
  return ENV_PREFIX + key.split('.').flatMap(words).join('_').toUpperCase();
}

export function flagName(key: string): string {
  return '--' + key.split('.').flatMap(words).join('-').toLowerCase();
}

/** Every leaf key of the schema, in schema order. */
export function schemaKeys(tree: SchemaTree = schema, prefix = ''): KeyInfo[] {
  const out: KeyInfo[] = [];
  for (const [name, node] of Object.entries(tree)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (isLeaf(node)) out.push({ key, env: envName(key), flag: flagName(key), leaf: node });
    else out.push(...schemaKeys(node, key));
  }
  return out;
}

/** True if `key` names a section (not a leaf) of the schema. */
export function isSection(path: readonly string[]): boolean {
  let node: SchemaLeaf | SchemaTree = schema;
  for (const p of path) {
    if (isLeaf(node)) return false;
    const next: SchemaLeaf | SchemaTree | undefined = node[p];
    if (next === undefined) return false;
    node = next;
  }
  return !isLeaf(node);
}
