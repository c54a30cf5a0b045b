// Every closed set of the sidecar, defined once: the reasons, stages, modes
// and label values that the decision, the record layer, the metrics, the log
// lines and the docs share. Metric label values are these sets (anything
// outside one is counted as "other", so a bug can never explode the series
// count); test/unit/vocabulary.test.ts checks that the decision, the metrics
// and docs/metrics.md read the same lists.

// The kernel's own sets (versions, ciphers, directions) are defined with the
// kernel struct in native/crypto-info.ts; the labels here extend them.
import { TLS_VERSIONS } from '../native/crypto-info.js';

/** `v` if it is in `set`, else `fallback`: how a label value is kept inside its closed set. */
export function oneOf<T extends string>(set: readonly T[], v: string, fallback: T): T {
  return (set as readonly string[]).includes(v) ? (v as T) : fallback;
}

/**
 * Why a connection is (or is not) on kernel TLS: the `ktls_reason` label, the
 * close line's `ktls_reason`, docs/ktls.md and docs/metrics.md. With ktls="on"
 * the reason is `enabled` (the full requested direction) or, for a `tx`
 * connection whose RX was refused, `rekey_unsupported` /
 * `kernel_cipher_unsupported`. The decision (proxy/ktls/decision.ts) produces
 * all but the last three: `handoff_failed` (the engine could not hand the
 * connection off), `not_attempted` (a connection that never reached the
 * decision) and `other` (the metrics' catch-all).
 */
export const KTLS_REASONS = [
  'enabled',
  'flag_off',
  'cipher_not_allowed',
  'version_not_offloadable',
  'kernel_no_tls',
  'kernel_cipher_unsupported',
  'native_unavailable',
  'sampled_out',
  'install_failed',
  'rekey_unsupported',
  'handoff_failed',
  'not_attempted',
  'other',
] as const;
export type KtlsReason = (typeof KTLS_REASONS)[number];

export const KTLS_STATES = ['on', 'off'] as const;
export type KtlsState = (typeof KTLS_STATES)[number];

/** What `ktls.direction` (and a per-cipher `:tx` / `:txrx`) can ask the kernel to hold. */
export const KTLS_DIRECTION_SETTINGS = ['tx', 'txrx'] as const;
export type KtlsDirectionSetting = (typeof KTLS_DIRECTION_SETTINGS)[number];

/** Where a connection's record layer is: the decision's mode. */
export const KTLS_MODES = ['userspace', ...KTLS_DIRECTION_SETTINGS] as const;
export type KtlsMode = (typeof KTLS_MODES)[number];

/** The `direction` label: the mode of an offloaded connection, `none` for userspace. */
export const DIRECTION_LABELS = [...KTLS_DIRECTION_SETTINGS, 'none'] as const;
export type KtlsDirectionLabel = (typeof DIRECTION_LABELS)[number];

/** The `tls_version` label: a version the sidecar negotiates, `none` before a handshake. */
export const TLS_VERSION_LABELS = [...TLS_VERSIONS, 'none', 'other'] as const;
export type TlsVersionLabel = (typeof TLS_VERSION_LABELS)[number];

/** Application protocol of a connection (from ALPN and mode). */
export const CONNECTION_PROTOCOLS = ['http1', 'h2', 'tcp', 'none'] as const;
export type ConnectionProtocol = (typeof CONNECTION_PROTOCOLS)[number];

/** Protocol of one HTTP request (`ws` = a WebSocket upgrade). */
export const HTTP_PROTOCOLS = ['http1', 'h2', 'ws'] as const;
export type HttpProtocol = (typeof HTTP_PROTOCOLS)[number];

export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'other'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

/**
 * Connections that ended before or during the handshake without a handshake
 * failure: refused by us, or closed by the client before it sent a byte
 * (`no_data`: TCP health checks, port scans).
 */
export const REJECT_REASONS = [
  'limit',
  'plain_http',
  'not_tls',
  'handshake_timeout',
  'handshake_buffer_limit',
  'draining',
  'no_data',
  'other',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** Handshakes that started (the ClientHello was TLS) and failed. */
export const HANDSHAKE_FAILURE_REASONS = [
  'timeout',
  'protocol_version',
  'protocol_error',
  'no_shared_cipher',
  'no_application_protocol',
  'client_cert_required',
  'client_cert_invalid',
  'peer_alert',
  'reset',
  'internal_error',
  'other',
] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];

export const UPSTREAM_ERROR_REASONS = [
  'connect_refused',
  'connect_timeout',
  'response_timeout',
  'reset',
  'dns',
  'protocol',
  'overloaded',
  'other',
] as const;
export type UpstreamErrorReason = (typeof UPSTREAM_ERROR_REASONS)[number];

/** Why an established connection ended. */
export const CLOSE_REASONS = [
  'client_close',
  /** The client reset the connection (ECONNRESET/EPIPE on the client side): how curl over HTTP/2 and browsers often end one. */
  'client_reset',
  'upstream_close',
  'idle_timeout',
  'headers_timeout',
  'bad_request',
  'upstream_error',
  'shutdown',
  'ktls_drain',
  'key_update_limit',
  'error',
  'other',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

/**
 * Ends of an open connection that are its normal life (docs/config.md, `log.connections`): not logged under
 * `errors`, sampled under `sample:`. Every other reason, and any added later, is a failure.
 */
export const NORMAL_CLOSE_REASONS = ['client_close', 'client_reset', 'upstream_close', 'idle_timeout', 'shutdown', 'ktls_drain'] as const satisfies readonly CloseReason[];

export const RESULTS = ['success', 'failure'] as const;
export type Result = (typeof RESULTS)[number];

export const RELOAD_TRIGGERS = ['sighup', 'config_watch', 'startup'] as const;
export type ReloadTrigger = (typeof RELOAD_TRIGGERS)[number];

export const FLAG_SOURCES = ['admin', 'sighup', 'config_watch', 'startup'] as const;
export type FlagSource = (typeof FLAG_SOURCES)[number];

/** Why the admin server refused a request (changes come from loopback peers only). */
export const ADMIN_REFUSAL_REASONS = ['not_loopback'] as const;
export type AdminRefusalReason = (typeof ADMIN_REFUSAL_REASONS)[number];

export const KEY_UPDATE_RESULTS = ['ok', 'rate_limited', 'unsupported', 'failed'] as const;
export type KeyUpdateResult = (typeof KEY_UPDATE_RESULTS)[number];

export const DRAIN_ACTIONS = ['closed', 'kept'] as const;
export type DrainAction = (typeof DRAIN_ACTIONS)[number];

/**
 * Where a kTLS syscall was made (proxy/ktls/errno.ts: EIO and EINVAL mean
 * different things at different stages), and the `stage` label of
 * ktls_errors_total. `decrypt` is a record that failed authentication in JS.
 */
export const KTLS_STAGES = [
  'ulp',
  'install_tx',
  'install_rx',
  'rekey_tx',
  'rekey_rx',
  'option',
  'recv',
  'read',
  'read_plain',
  'write',
  'send_control',
  'poll',
  'splice_in',
  'splice_out',
  'decrypt',
  'probe',
  'other',
] as const;
export type KtlsStage = (typeof KTLS_STAGES)[number];

export const OFFLOAD_RESULTS = ['attempted', 'installed', 'failed'] as const;
export type OffloadResult = (typeof OFFLOAD_RESULTS)[number];

/** `sw`: the kernel's software crypto; `device`: the NIC (TLS_DEVICE) took the direction. */
export const OFFLOAD_KINDS = ['sw', 'device'] as const;
export type OffloadKind = (typeof OFFLOAD_KINDS)[number];

/** `none`: CPU of intervals in which no connection moved bytes (timers, GC, admin). */
export const CPU_MODES = ['on', 'off', 'none'] as const;
export type CpuMode = (typeof CPU_MODES)[number];

/**
 * What the last-resort handlers (proxy/crash-guard.ts) caught; engine
 * connections left on Node's TLS over the engine's JS Duplex (no exact
 * hand-off state); writes a JS stream wrapper refused instead of asserting
 * (proxy/handshake/js-stream-guard.ts) — the last two: nodejs/node#35384.
 */
export const INTERNAL_ERROR_KINDS = ['uncaught_exception', 'unhandled_rejection', 'engine_fallback', 'js_stream_write_refused'] as const;
export type InternalErrorKind = (typeof INTERNAL_ERROR_KINDS)[number];

/** `upstream.proxyProtocol` (tcp mode): send a PROXY protocol v2 header to the upstream, or not. */
export const PROXY_PROTOCOL_MODES = ['off', 'v2'] as const;
export type ProxyProtocolMode = (typeof PROXY_PROTOCOL_MODES)[number];

/**
 * Why the handshake engine kept a connection on Node's TLS over its JS stream
 * (no exact hand-off state): the close line's `engine_fallback` and
 * docs/ktls.md. `cipher_not_offloadable`: a version or suite neither the
 * kernel nor the JS record layer can hold (the offload hook is not asked);
 * `read_stop_unavailable`: this Node lacks what stopping reads needs;
 * `tracker_desync`: the wire did not match what OpenSSL reported;
 * `handoff_verify_failed`: the derived state did not verify (e.g. the TLS 1.2
 * client Finished); `engine_not_quiet`: OpenSSL kept writing after the
 * handshake.
 */
export const ENGINE_FALLBACK_REASONS = [
  'cipher_not_offloadable',
  'read_stop_unavailable',
  'tracker_desync',
  'handoff_verify_failed',
  'engine_not_quiet',
] as const;
export type EngineFallbackReason = (typeof ENGINE_FALLBACK_REASONS)[number];

/** `ktls_sidecar_workers{state}`: worker processes the primary should run, and those serving now. */
export const WORKER_STATES = ['configured', 'running'] as const;
/** Why a worker was replaced: it exited by itself (any code) or was ended by a signal (OOM kill, kill -9). */
export const WORKER_RESTART_REASONS = ['exit', 'signal'] as const;
export type WorkerRestartReason = (typeof WORKER_RESTART_REASONS)[number];
