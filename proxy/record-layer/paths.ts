// The two halves a record layer stream is made of, whichever side holds
// them: a TX path (kernel-tx.ts or js-sides.ts) and an RX path (kernel-rx.ts
// or js-sides.ts). The stream (stream.ts) orders TX and carries RX
// backpressure; the control state machine (control.ts) decides what a
// control record means; a path only moves records and keys.

import type net from 'node:net';
import type { KtlsNative } from '../../native/index.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { RecordProtection } from '../tls/record-protection.js';
import type { RecordReader, RxEvent } from '../tls/records.js';
import type { TrafficSecretChain } from './keyupdate.js';
import type { RecordLayerEvents, Where } from './stats.js';

export type Done = (err?: Error | null) => void;

/** Where TX lives, as the stream's owner hands it over. */
export type TxSide =
  /** The kernel holds TX; for TLS 1.3 we keep the traffic secret chain for KeyUpdate (null for 1.2). */
  | { side: 'kernel'; secrets: TrafficSecretChain | null }
  | { side: 'js'; protection: RecordProtection };

/** Where RX lives, as the stream's owner hands it over. */
export type RxSide =
  | { side: 'kernel'; secrets: TrafficSecretChain | null }
  /** `reader` already holds the leftover ciphertext; the stream keeps feeding it from the raw socket. */
  | { side: 'js'; reader: RecordReader };

export interface TxPath {
  readonly where: Where;
  /** Plaintext bytes sent. */
  readonly bytes: number;
  /** Records sent (kernel: from sequence numbers as of the last refreshRecords(); -1 when unreadable). */
  readonly records: number;
  refreshRecords(): void;
  /** Application data, in order; `cb` once the raw socket took it (its backpressure). */
  writeData(chunks: Buffer[], cb: Done): void;
  /** One control record under the current key (the caller holds the TX slot). */
  sendRecord(type: number, body: Buffer, cb: Done): void;
  /** False where our KeyUpdate could not be followed by the next key (kernel without rekey, TLS 1.2 secrets). */
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
  refreshRecords(): void;
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

/** The raw socket of a connection with a direction in the kernel. */
export interface KernelSocket {
  raw: net.Socket;
  fd: number;
  native: KtlsNative;
  events: RecordLayerEvents;
}

/** The kernel's next record sequence number for a direction, or -1n when it cannot be read. */
export function kernelSeq(k: KernelSocket, dir: 'tx' | 'rx'): bigint {
  if (k.raw.destroyed) return -1n;
  try {
    return k.native.getCryptoInfo(k.fd, dir).recSeq;
  } catch (err) {
    k.events.syscallError?.(classifyKtlsError(err, 'option'));
    return -1n;
  }
}

/** A libuv write on the raw socket; an error when its write side is gone. */
export function rawWrite(raw: net.Socket, buf: Buffer, cb: Done): void {
  if (raw.destroyed || raw.writableEnded) {
    cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
    return;
  }
  raw.write(buf, (err) => cb(err ?? null));
}
