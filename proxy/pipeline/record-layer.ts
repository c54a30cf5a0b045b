// The ONE place that decides where a connection's TLS record layer lives.
// Today: always in userspace (the TLSSocket itself). The kTLS work replaces the
// body of selectRecordLayer() (decision → install → kernel-backed Duplex); its
// inputs and output stay as they are, so server.ts and the fronts never change.
import type { Duplex } from 'node:stream';
import type net from 'node:net';
import type tls from 'node:tls';
import type { KtlsFlag } from '../admin/flag.js';
import type { ConnectionLabels, TlsVersionLabel } from '../admin/metrics.js';
import type { Config } from '../config/schema.js';
import type { HandshakeFacts } from './facts.js';

/**
 * The kTLS labels of a connection (docs/metrics.md): ktls, ktls_reason,
 * tls_version, cipher, direction. The connection's `protocol` label is the
 * pipeline's business, not the record layer's.
 */
export type KtlsLabels = Omit<ConnectionLabels, 'protocol'>;

export interface RecordLayerInput {
  /** The userspace TLS connection after a completed handshake. */
  tls: tls.TLSSocket;
  /** The accepted TCP socket underneath it (the fd a kernel record layer would use). */
  raw: net.Socket;
  facts: Readonly<HandshakeFacts>;
  /**
   * What a kTLS decision needs besides the connection: the runtime flag (may
   * be absent in tools/tests: treat as off) and the ktls.* config of the
   * generation that accepted the connection.
   */
  policy: { flag: KtlsFlag | undefined; ktls: Config['ktls'] };
}

export interface RecordLayer {
  /** Plaintext both ways. Fronts must treat it as a plain Duplex. */
  stream: Duplex;
  labels: Readonly<KtlsLabels>;
  /** Extra fields for the connection's closing log line (e.g. kernel record counts). */
  closeInfo(): Record<string, string | number>;
}

export function selectRecordLayer(input: RecordLayerInput): Promise<RecordLayer> {
  const labels: KtlsLabels = {
    ktls: 'off',
    ktls_reason: 'not_attempted',
    tls_version: input.facts.tlsVersion as TlsVersionLabel,
    cipher: input.facts.cipher,
    direction: 'none',
  };
  return Promise.resolve({ stream: input.tls, labels, closeInfo: () => ({}) });
}
