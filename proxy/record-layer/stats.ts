// What a record layer reports: the counters of the connection's close log
// line, and the events metrics and logs subscribe to. Kernel record counts
// come from the kernel's own sequence numbers (exact in JS).

import type { KtlsErrorClass } from '../ktls/errno.js';

/** Where a direction's records are protected. */
export type Where = 'kernel' | 'js';

/** What the record layer's events report to metrics/logs (wired by the connection path). */
export interface RecordLayerEvents {
  /** Every failed syscall, already classified (errno name + kind + stage). */
  syscallError?(info: KtlsErrorClass): void;
  /** A record failed authentication (kernel EBADMSG or JS open failure). */
  decryptError?(where: 'kernel' | 'userspace'): void;
  /** One KeyUpdate step: RX = the peer's, TX = ours. */
  keyUpdate?(direction: 'rx' | 'tx', result: 'ok' | 'rate_limited' | 'unsupported' | 'failed'): void;
  /** An alert from the peer other than close_notify. */
  peerAlert?(level: number, description: number): void;
  /** A TLS 1.2 ClientHello after the handshake (client renegotiation), refused; `fatal` from the second on. */
  renegotiationRefused?(fatal: boolean): void;
}

/** Counters for the connection's close log line. */
export interface RecordLayerStats {
  tx: Where;
  rx: Where;
  /** Plaintext bytes by where they were (de)crypted. */
  rxBytesKernel: number;
  rxBytesUserspace: number;
  txBytesKernel: number;
  txBytesUserspace: number;
  /** Records: exact in JS; kernel counts come from the kernel's sequence numbers (-1 when unreadable). */
  rxRecordsUserspace: number;
  rxRecordsKernel: number;
  txRecordsUserspace: number;
  txRecordsKernel: number;
  keyUpdatesIn: number;
  keyUpdatesOut: number;
  closeNotifyIn: boolean;
  closeNotifyOut: boolean;
  /** The peer sent FIN without close_notify. */
  truncated: boolean;
  alertsIn: number;
  /** TLS 1.2 client renegotiations refused (ClientHellos after the handshake). */
  renegotiationsRefused: number;
  /** Why we ended the connection ourselves, if we did (e.g. rekey_unsupported, key_update_limit). */
  endReason: string | null;
}

/** The control-record part of the stats (kept by the control state machine). */
export type ControlCounters = Pick<RecordLayerStats,
  'keyUpdatesIn' | 'keyUpdatesOut' | 'closeNotifyIn' | 'closeNotifyOut' | 'truncated' | 'alertsIn' | 'renegotiationsRefused' | 'endReason'>;

/**
 * Records one kernel direction has protected, across rekeys: its sequence
 * number restarts at 0 with each key, so each key epoch is folded into the
 * total before the next key goes in.
 */
export class KernelRecordCounter {
  private base: bigint;
  /** -1 once any epoch could not be read: a partial count would mislead. */
  total = 0;

  /** `seq`: the kernel's next sequence number for the direction, -1n when it cannot be read. */
  constructor(private readonly seq: () => bigint) {
    this.base = seq();
  }

  /** Fold the records of the current key epoch into the total. */
  refresh(): void {
    const seq = this.seq();
    const unknown = seq < 0n || this.base < 0n || this.total < 0;
    this.total = unknown ? -1 : this.total + Number(seq - this.base);
    this.base = seq;
  }

  /** A new key is in: its epoch starts at sequence 0 (call refresh() before the rekey). */
  rekeyed(): void {
    this.base = 0n;
  }
}
