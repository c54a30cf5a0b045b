// The sidecar's observation port: what the connection path, the fronts and
// the kTLS code report, as one interface. Nothing here knows Prometheus or the
// log format; proxy/admin/metrics.ts implements SidecarEvents and the
// composition root (proxy/cli.ts) wires it in. Modules below the root import
// these types from here, never from admin/.

import type {
  AdminRefusalReason,
  CloseReason,
  ConnectionProtocol,
  DrainAction,
  FlagSource,
  HandshakeFailureReason,
  HttpProtocol,
  InternalErrorKind,
  KeyUpdateResult,
  KtlsDirectionLabel,
  KtlsReason,
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

/** Per-connection handle: caches the labelled children (bytes are counted per chunk) and closes once. */
export interface ConnectionMetrics {
  readonly labels: ConnectionLabels;
  /** Add application bytes: `rx` received from the client, `tx` sent to it. */
  bytes(rx: number, tx: number): void;
  /** Count the close (idempotent: later calls do nothing). */
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
 * call these; the Prometheus adapter (proxy/admin/metrics.ts) implements them,
 * and `fanOut` lets more observers subscribe (the close log line, tests).
 */
export interface SidecarEvents {
  /** A TCP connection was accepted (before limits, sniffing or the handshake). */
  connectionAccepted(): void;
  /** A connection was refused before or during the handshake. */
  connectionRejected(reason: RejectReason): void;
  handshakeCompleted(facts: { tlsVersion: string; cipher: string; protocol: ConnectionProtocol; durationSeconds: number }): void;
  handshakeFailed(reason: HandshakeFailureReason): void;
  /** The record layer is chosen: count the connection as open with its final labels. */
  connectionOpened(labels: ConnectionLabels): ConnectionMetrics;
  /** Close without a handle (prefer `ConnectionMetrics.close`). */
  connectionClosed(labels: ConnectionLabels, reason: CloseReason): void;
  /** Add bytes without a handle (prefer `ConnectionMetrics.bytes`). */
  bytes(labels: ConnectionLabels, rx: number, tx: number): void;
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
  ktlsError(errno: string, stage: string): void;
  /** One direction of one connection: install attempted, then installed or failed. */
  ktlsOffload(result: OffloadResult, direction: KtlsDirection, offload: OffloadKind): void;
  /** One CPU accounting interval (proxy/ktls/cpu-accounting.ts CpuSplit): seconds per mode. */
  cpuSplit(split: { readonly on: number; readonly off: number; readonly none: number }): void;
  /** An error the process survived (crash guard), or an engine connection left on the Duplex. */
  internalError(kind: InternalErrorKind): void;
}
