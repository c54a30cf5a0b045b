// Where a connection's TLS record layer lives, and its labels. Two ways in:
//  - userspaceRecordLayer(): a Node TLSSocket (the fast path for connections
//    that can never be offloaded; and the rare engine connection without an
//    exact hand-off state, which stays on Node's TLS over the engine's JS
//    Duplex — close line `engine_fallback`);
//  - kernelRecordLayer(): every handed-off connection → installKtls() →
//    RecordLayerStream: kernel TX, kernel or JS RX; or the whole record layer
//    in JS (`record_layer: js`) when the decision keeps the keys in userspace
//    or the install failed before any key reached the kernel.
// close line `record_layer`: kernel | js (RecordLayerStream, both sides in
// JS) | userspace (Node's TLSSocket).
// Either way the caller gets a plaintext Duplex, the connection's labels and
// a closeInfo() for its close log line, so the connection path and the fronts
// never branch on kTLS.
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import type { CloseInfo, ConnectionLabels, KtlsEvents } from '../observe/events.js';
import type { EngineFallbackReason, KtlsReason as ReasonLabel, OffloadKind, OffloadResult, TlsVersionLabel } from '../vocabulary.js';
import { decisionLabels } from '../ktls/decision.js';
import type { KtlsDecision } from '../ktls/decision.js';
import { type InstallInput, KtlsInstallError, installKtls } from '../record-layer/install.js';
import type { RecordLayerStream } from '../record-layer/stream.js';
import type { TlsStat } from '../ktls/tls-stat.js';
import type { KtlsDirection } from '../../native/crypto-info.js';
import type { ConnectionFacts } from './facts.js';

/**
 * The kTLS labels of a connection (docs/metrics.md): ktls, ktls_reason,
 * tls_version, cipher, direction. The connection's `protocol` label is the
 * connection path's business, not the record layer's.
 */
export type KtlsLabels = Omit<ConnectionLabels, 'protocol'>;

export interface RecordLayer {
  /** Plaintext both ways. Fronts must treat it as a plain Duplex. */
  stream: Duplex;
  labels: Readonly<KtlsLabels>;
  /** Fields for the connection's close log line (where records/bytes were protected, decision, reason). */
  closeInfo(): CloseInfo;
}

function labelsOf(facts: Pick<ConnectionFacts, 'tlsVersion' | 'cipher'>, l: Pick<KtlsLabels, 'ktls' | 'ktls_reason' | 'direction'>): KtlsLabels {
  return { ...l, tls_version: facts.tlsVersion as TlsVersionLabel, cipher: facts.cipher };
}

/**
 * A Node TLSSocket record layer; `reason` says why it is not in the kernel.
 * `engineFallback`: the engine's reason when this TLSSocket runs over the
 * engine's JS Duplex (no exact hand-off state), for the close line.
 */
export function userspaceRecordLayer(
  socket: tls.TLSSocket,
  facts: Pick<ConnectionFacts, 'tlsVersion' | 'cipher'>,
  reason: Exclude<ReasonLabel, 'enabled'>,
  engineFallback?: EngineFallbackReason,
): RecordLayer {
  const labels = labelsOf(facts, { ktls: 'off', ktls_reason: reason, direction: 'none' });
  const info: CloseInfo = { record_layer: 'userspace', tx: 'userspace', rx: 'userspace', ktls_decision: 'userspace', ...(engineFallback && { engine_fallback: engineFallback }) };
  return { stream: socket, labels, closeInfo: () => ({ ...info }) };
}

/**
 * Why an engine connection stayed on its TLSSocket (no exact hand-off
 * state), as a `ktls_reason`: the decision's own reason when the offload
 * hook had already declined; the version or suite when the kernel could
 * never hold it (the hook was not asked); and `handoff_failed` when the
 * hand-off itself did not work out.
 */
export function engineUserspaceReason(
  reason: EngineFallbackReason,
  hookDecision: KtlsDecision | undefined,
  tlsVersion: string,
): Exclude<ReasonLabel, 'enabled'> {
  if (hookDecision && hookDecision.mode === 'userspace') {
    return hookDecision.reason === 'enabled' ? 'handoff_failed' : hookDecision.reason;
  }
  if (reason === 'cipher_not_offloadable') {
    return tlsVersion === 'TLSv1.3' || tlsVersion === 'TLSv1.2' ? 'cipher_not_allowed' : 'version_not_offloadable';
  }
  // The rest are hand-off failures (tracker_desync, handoff_verify_failed,
  // engine_not_quiet, read_stop_unavailable).
  return 'handoff_failed';
}

/** installKtls()'s input (a `userspace` decision keeps the keys in the JS record layer), plus: */
export interface KernelLayerInput extends Pick<InstallInput, 'handoff' | 'decision' | 'native' | 'rekeySupported' | 'keyUpdateRateLimit' | 'splice' | 'rxWholeRecordPoll' | 'rxExpectNoPad'> {
  facts: Pick<ConnectionFacts, 'tlsVersion' | 'cipher'>;
  /** The connection's kTLS events, each direction's install result (`offload`) included. */
  events: KtlsEvents;
  /**
   * Reads /proc/net/tls_stat, when a NIC could take TLS (probe); null: every
   * install is software kTLS. A TlsTxDevice/TlsRxDevice step across the
   * install marks the direction `device` (best effort with concurrent installs).
   */
  tlsStat: (() => TlsStat | null) | null;
}

export interface KernelRecordLayer extends RecordLayer {
  /** The final decision: the input one, or `install_failed` (userspace). */
  decision: KtlsDecision;
  stream: RecordLayerStream;
}

/**
 * The record layer of a handed-off connection: kTLS installed per the
 * decision, or the JS record layer when the decision keeps the keys in
 * userspace (nothing attempted, nothing counted as an offload). Rejects with
 * KtlsInstallError (socket already destroyed) when the connection cannot go on.
 */
export async function kernelRecordLayer(input: KernelLayerInput): Promise<KernelRecordLayer> {
  const { decision } = input;
  const offload = (result: OffloadResult, direction: KtlsDirection, kind: OffloadKind): void => input.events.offload?.(result, direction, kind);
  // allowHalfOpen: the fronts' half-close semantics (tcp mode forwards FIN).
  const install = () => installKtls({ ...input, allowHalfOpen: true });
  if (decision.mode === 'userspace') {
    // The JS record layer from the hand-off state, no syscall.
    const r = await install();
    return handedOffLayer(r.stream, r.decision, input.facts);
  }
  const before = input.tlsStat?.() ?? null;
  offload('attempted', 'tx', 'sw');
  const wantRx = decision.mode === 'txrx';
  let result;
  try {
    result = await install();
  } catch (err) {
    // RX refused after TX: TX was in the kernel, RX failed. Anything else: TX never got there.
    const afterTx = err instanceof KtlsInstallError && err.info?.stage === 'install_rx';
    offload(afterTx ? 'installed' : 'failed', 'tx', 'sw');
    if (afterTx) {
      offload('attempted', 'rx', 'sw');
      offload('failed', 'rx', 'sw');
    }
    throw err;
  }
  const stream = result.stream;
  const final = result.decision;
  const stats = stream.stats();
  if (final.mode === 'userspace') {
    offload('failed', 'tx', 'sw');
  } else {
    const after = input.tlsStat?.() ?? null;
    const kind = (counter: string): OffloadKind =>
      before && after && (after[counter] ?? 0) > (before[counter] ?? 0) ? 'device' : 'sw';
    offload('installed', 'tx', kind('TlsTxDevice'));
    // RX stays in JS without a failure when the peer had already ended (FIN or
    // close_notify in the leftover): nothing was attempted then.
    if (wantRx && stats.rx === 'kernel') {
      const rxKind = kind('TlsRxDevice');
      offload('attempted', 'rx', rxKind);
      offload('installed', 'rx', rxKind);
    }
  }
  return handedOffLayer(stream, final, input.facts);
}

/** Labels and close-line fields of a RecordLayerStream. */
function handedOffLayer(stream: RecordLayerStream, final: KtlsDecision, facts: KernelLayerInput['facts']): KernelRecordLayer {
  const labels = labelsOf(facts, decisionLabels(final));
  const side = (s: 'kernel' | 'js'): string => (s === 'kernel' ? 'kernel' : 'userspace');
  return {
    stream,
    decision: final,
    labels,
    closeInfo: () => {
      const s = stream.stats();
      return {
        // userspace decision or install_failed: both sides in JS (never Node's TLSSocket).
        record_layer: final.mode === 'userspace' ? 'js' : 'kernel',
        tx: side(s.tx),
        rx: side(s.rx),
        ktls_decision: final.mode,
        bytes_in_kernel: s.rxBytesKernel,
        bytes_in_userspace: s.rxBytesUserspace,
        bytes_out_kernel: s.txBytesKernel,
        bytes_out_userspace: s.txBytesUserspace,
        // The part of bytes_*_kernel a splice pump moved: it never entered JS.
        bytes_in_spliced: s.rxBytesSpliced,
        bytes_out_spliced: s.txBytesSpliced,
        records_in_kernel: s.rxRecordsKernel,
        records_in_userspace: s.rxRecordsUserspace,
        records_out_kernel: s.txRecordsKernel,
        records_out_userspace: s.txRecordsUserspace,
        key_updates_in: s.keyUpdatesIn,
        key_updates_out: s.keyUpdatesOut,
        close_notify_in: s.closeNotifyIn,
        close_notify_out: s.closeNotifyOut,
        truncated: s.truncated,
        alerts_in: s.alertsIn,
        renegotiations_refused: s.renegotiationsRefused,
        end_reason: s.endReason,
      };
    },
  };
}
