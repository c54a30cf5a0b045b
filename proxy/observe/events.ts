// The sidecar's observation port. SidecarEvents: what the connection path,
// the fronts and the kTLS code report, as one interface; proxy/admin/metrics.ts
// implements it and the composition root (proxy/cli.ts) wires it in.
// ConnectionObserver: a connection's life as events (accepted, refused,
// opened → bytes → closed, kTLS events), which the metrics adapter, the
// close log line and CPU accounting observe side by side (`fanOut`). Nothing
// here knows Prometheus or the log format; modules below the root import
// these types from here, never from admin/.

import type {
  AdminRefusalReason,
  CloseReason,
  ConnectionProtocol,
  DrainAction,
  EngineFallbackReason,
  FlagSource,
  HandshakeFailureReason,
  HttpProtocol,
  InternalErrorKind,
  KeyUpdateResult,
  KtlsDirectionLabel,
  KtlsReason,
  KtlsStage,
  KtlsState,
  OffloadKind,
  OffloadResult,
  RejectReason,
  ReloadTrigger,
  Result,
  TlsVersionLabel,
  UpstreamErrorReason,
} from '../vocabulary.js';
import type { KtlsDirection } from '../../native/crypto-info.js';
import type { HandshakeFailure } from '../handshake/failure.js';
import type { InstallEvents } from '../record-layer/install.js';

/** The labels on every per-connection and byte series. */
export interface ConnectionLabels {
  readonly ktls: KtlsState;
  readonly ktls_reason: KtlsReason;
  readonly tls_version: TlsVersionLabel;
  /** IANA suite name (`getCipher().standardName`), or `none`. */
  readonly cipher: string;
  readonly direction: KtlsDirectionLabel;
  readonly protocol: ConnectionProtocol;
}

/**
 * A connection's application (plaintext) bytes so far: `bytesIn` from the
 * client, `bytesOut` to it — every byte, spliced or not. Live and monotonic;
 * observers read it when they need it (a scrape, a CPU tick, the close), so
 * no chunk pays for them.
 */
export interface ByteCounts {
  readonly bytesIn: number;
  readonly bytesOut: number;
  /**
   * The part of bytesIn / bytesOut a splice pump moved between the upstream
   * and the kernel's TLS (proxy/record-layer/splice.ts): bytes that never
   * entered JS. Absent: none can be (a record layer that does not splice).
   */
  readonly splicedIn?: number;
  readonly splicedOut?: number;
}

/** Per-connection handle: caches the labelled children, reads the connection's bytes, closes once. */
export interface ConnectionMetrics {
  readonly labels: ConnectionLabels;
  /** Count the close (idempotent: later calls do nothing); the bytes not yet counted are counted first. */
  close(reason: CloseReason): void;
}

export interface CertificateExpiry {
  readonly servername: string;
  readonly subject: string;
  /** Expiry, ms since the epoch. */
  readonly notAfter: number;
}

/**
 * Everything the sidecar reports about itself: connections, handshakes,
 * requests, kTLS, reloads. The connection path, the fronts and the kTLS code
 * call these; the Prometheus adapter (proxy/admin/metrics.ts) implements them
 * (connection events reach it through metrics-observer.ts).
 */
export interface SidecarEvents {
  /** A TCP connection was accepted (before limits, sniffing or the handshake). */
  connectionAccepted(): void;
  /** A connection was refused before or during the handshake. */
  connectionRejected(reason: RejectReason): void;
  handshakeCompleted(facts: { tlsVersion: string; cipher: string; protocol: ConnectionProtocol; durationSeconds: number }): void;
  handshakeFailed(reason: HandshakeFailureReason): void;
  /** The record layer is chosen: count the connection as open with its final labels; its bytes are read from `bytes`. */
  connectionOpened(labels: ConnectionLabels, bytes: ByteCounts): ConnectionMetrics;
  httpRequest(facts: { protocol: HttpProtocol; status: number; ktls: KtlsState; durationSeconds: number }): void;
  upstreamError(reason: UpstreamErrorReason): void;
  /** Replace the certificate expiry series (startup and every cert reload). */
  setCertificates(certs: readonly CertificateExpiry[]): void;
  certReload(result: Result): void;
  /** The admin server refused a request (a change from a non-loopback peer: 403). */
  adminRequestRefused(reason: AdminRefusalReason): void;
  configReload(result: Result, trigger: ReloadTrigger): void;
  /** Set by the flag on every change; do not call directly. */
  setKtlsEnabled(enabled: boolean): void;
  ktlsFlagChanged(source: FlagSource): void;
  /** Result of the kernel probe (1 = kTLS usable on this host). */
  setKernelAvailable(available: boolean): void;
  keyUpdate(direction: 'rx' | 'tx', result: KeyUpdateResult): void;
  /** A kTLS connection met the flag turning off (drained, or kept: tcp with drainOnDisable keep). */
  ktlsDrained(action: DrainAction): void;
  /** A failed kTLS syscall (already classified by classifyKtlsError), or a record that failed authentication. */
  ktlsError(errno: string, stage: KtlsStage): void;
  /** One direction of one connection: install attempted, then installed or failed. */
  ktlsOffload(result: OffloadResult, direction: KtlsDirection, offload: OffloadKind): void;
  /** One CPU accounting interval (proxy/observe/cpu-accounting.ts CpuSplit): seconds per mode. */
  cpuSplit(split: { readonly on: number; readonly off: number; readonly none: number }): void;
  /** An error the process survived (crash guard), or an engine connection left on the Duplex. */
  internalError(kind: InternalErrorKind): void;
}

/** Why a connection ended before it had a record layer: a rejection or a handshake failure, never both. */
export type ConnectionRefusal = HandshakeFailure & {
  /** The close line's reason when the counted one is coarser (`ktls_install_aborted` is counted as `other`). */
  readonly closeReason?: string;
};

/** A connection that ended before its record layer (admission refusals have no id yet). */
export interface RefusedConnection {
  readonly id?: number;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  /** monotonic ms (performance.now()) of the accept. */
  readonly acceptedAt: number;
}

/** A connection past its handshake with its record layer chosen: what observers label and log it by. */
export interface OpenedConnection extends Required<RefusedConnection> {
  readonly servername: string;
  readonly alpn: string;
  readonly tlsVersion: string;
  readonly cipher: string;
  readonly labels: ConnectionLabels;
  /** Its application bytes so far (live). */
  readonly bytes: ByteCounts;
}

/** The record layer's own account for the close line: counts, sides and reasons only (never key material). */
export type CloseInfo = Readonly<Record<string, string | number | boolean | null>>;

/** How an open connection ended. */
export interface ConnectionEnd {
  readonly reason: CloseReason;
  readonly error: unknown;
  /** Plaintext bytes from / to the client. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly closeInfo: CloseInfo;
}

/** What an observer follows of one open connection (its bytes: OpenedConnection.bytes). */
export interface ConnectionSpan {
  readonly closed?: (end: ConnectionEnd) => void;
}

/**
 * The life of a connection as its observers see it (the metrics adapter, the
 * close log line, CPU accounting): the connection path reports each step once
 * and never calls metrics or writes its log lines itself. Every method is
 * optional for one observer; `fanOut` makes the complete one the path calls.
 */
export interface ConnectionObserver {
  /** The listener accepted a TCP connection (before limits, sniffing or the handshake). */
  accepted(): void;
  refused(conn: RefusedConnection, refusal: ConnectionRefusal, error?: unknown): void;
  opened(conn: OpenedConnection): ConnectionSpan;
  /** The engine left a connection on Node's TLS over its JS stream (no exact hand-off state). */
  engineFallback(id: number, fallback: { engineReason: EngineFallbackReason; ktlsReason: KtlsReason; cipher: string }): void;
  /** TLS wrote over the engine stream during its shutdown: the write failed and the connection ends. */
  jsStreamWriteRefused(id: number): void;
  ktls(id: number): KtlsEvents;
}

/**
 * The kTLS events of one connection: the record layer's (install, failed
 * syscalls, KeyUpdate, refused renegotiation) and each direction's install
 * result.
 */
export interface KtlsEvents extends InstallEvents {
  offload?(result: OffloadResult, direction: KtlsDirection, offload: OffloadKind): void;
}

type Handler = (...args: unknown[]) => unknown;

/** Calls method `k` of every part that has it, in order (as a method: class observers keep `this`). */
function each(parts: readonly object[], k: string): (...args: never[]) => void {
  return (...args: unknown[]) => {
    for (const p of parts) (p as Record<string, Handler | undefined>)[k]?.(...args);
  };
}

/** The handlers of several plain objects (spans, kTLS events) as one. */
function merge<T extends object>(parts: readonly T[]): T {
  const keys = new Set(parts.flatMap((p) => Object.keys(p)));
  return Object.fromEntries([...keys].map((k) => [k, each(parts, k)])) as T;
}

/** One observer made of several: each event goes to every part that listens for it, in order. */
export function fanOut(...parts: Array<Partial<ConnectionObserver>>): ConnectionObserver {
  return {
    accepted: each(parts, 'accepted'),
    refused: each(parts, 'refused'),
    engineFallback: each(parts, 'engineFallback'),
    jsStreamWriteRefused: each(parts, 'jsStreamWriteRefused'),
    opened: (conn) => merge(parts.map((p) => p.opened?.(conn) ?? {})),
    ktls: (id) => merge(parts.map((p) => p.ktls?.(id) ?? {})),
  };
}
