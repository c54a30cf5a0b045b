// The two halves a record layer stream is made of, whichever side holds
// them: a TX path and an RX path, each in the kernel (kernel.ts) or in JS
// (js-sides.ts). The stream (stream.ts) orders TX and carries RX
// backpressure; the control state machine (control.ts) decides what a
// control record means; a path only moves records and keys.

import type net from 'node:net';
import { ErrorCodes, SidecarError } from '../errors.js';
import type { KtlsErrorClass } from '../ktls/errno.js';
import type { RecordProtection } from '../tls/record-protection.js';
import type { RecordReader, RxEvent } from '../tls/records.js';
import type { ControlCounters } from './control.js';

export type Done = (err?: Error | null) => void;

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

/**
 * Where TX lives, as the stream's owner hands it over. In the kernel, TLS 1.3
 * keeps the direction's JS protection: its traffic secret gives the next key
 * on KeyUpdate (null for TLS 1.2, whose keys are wiped after the install).
 */
export type TxSide =
  | { side: 'kernel'; keys: RecordProtection | null }
  | { side: 'js'; protection: RecordProtection };

/** Where RX lives, as the stream's owner hands it over. */
export type RxSide =
  | { side: 'kernel'; keys: RecordProtection | null }
  /** `reader` already holds the leftover ciphertext; the stream keeps feeding it from the raw socket. */
  | { side: 'js'; reader: RecordReader };

export interface TxPath {
  readonly where: Where;
  /** Plaintext bytes written through writeData (a splice pump's are counted by its lend). */
  readonly bytes: number;
  /** Records sent (kernel: from sequence numbers as of the last refreshRecords(); -1 when unreadable). */
  readonly records: number;
  /** Kernel only: fold the kernel's sequence number into `records` (JS counts as it goes). */
  refreshRecords?(): void;
  /** Application data, in order; `cb` once the raw socket took it (its backpressure). */
  writeData(chunks: Buffer[], cb: Done): void;
  /** One control record under the current key (the caller holds the TX slot). */
  sendRecord(type: number, body: Buffer, cb: Done): void;
  /** False where our KeyUpdate could not be followed by the next key (kernel without rekey, TLS 1.2 keys). */
  readonly canRekey: boolean;
  /** The next key, right after our KeyUpdate left; an error when the kernel refused it. */
  rekey(): Error | null;
  /** Records protected under the current key (-1n when unreadable). */
  keyUsage(): bigint;
  wipe(): void;
}

export interface RxPath {
  readonly where: Where;
  readonly records: number;
  refreshRecords?(): void;
  /** Begin receiving (`peerEnded`: the FIN arrived before the stream existed). */
  start(peerEnded: boolean): void;
  /** Backpressure: the owner's buffer is full / wants more. */
  pause(): void;
  resume(): void;
  /** No more receiving (EOF or fatal). */
  stop(): void;
  /** The peer's KeyUpdate, for a path that did not already follow it. */
  rekey(): 'ok' | 'unsupported' | 'failed';
  /** Release the poller and buffers, zero the keys. */
  close(): void;
}

/** What an RX path sees of its stream. */
export interface RxSink {
  /** Receiving has not ended and the stream is alive. */
  live(): boolean;
  /** live(), and the owner wants more (no backpressure). */
  wanted(): boolean;
  /** One event; false when receiving must stop (ended or destroyed). */
  event(ev: RxEvent, where: 'kernel' | 'userspace', rxAlreadyRekeyed: boolean): boolean;
  /** The transport's EOF, after every record before it was delivered. */
  peerFin(): void;
  destroy(err?: Error): void;
}

/** A libuv write on the raw socket; an error when its write side is gone. */
export function rawWrite(raw: net.Socket, buf: Buffer, cb: Done): void {
  if (raw.destroyed || raw.writableEnded) {
    cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
    return;
  }
  raw.write(buf, (err) => cb(err ?? null));
}

/** Counters for the connection's close log line. */
export interface RecordLayerStats extends ControlCounters {
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
  /** The part of rxBytesKernel / txBytesKernel a splice pump moved: bytes that never entered JS. */
  rxBytesSpliced: number;
  txBytesSpliced: number;
}
