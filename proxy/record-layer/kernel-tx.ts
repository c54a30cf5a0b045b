// TX in the kernel (kTLS): plaintext writes go to the raw net.Socket through
// libuv and the kernel makes ≤ 16 KiB records of them (transparent to libuv,
// backpressure included — measured in the kernel lab). A control record
// (alert, KeyUpdate) is one sendmsg with TLS_SET_RECORD_TYPE, which bypasses
// libuv's write queue: the stream sends it only while it holds the TX slot,
// so every earlier write has completed and the record cannot overtake data.

import { wipeCryptoInfo } from '../../native/crypto-info.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { TrafficSecretChain } from './keyupdate.js';
import { kernelSeq, rawWrite } from './paths.js';
import type { Done, KernelSocket, TxPath } from './paths.js';
import { KernelRecordCounter } from './stats.js';

export class KernelTx implements TxPath {
  readonly where = 'kernel';
  readonly canRekey: boolean;
  bytes = 0;
  private readonly counter: KernelRecordCounter;

  constructor(
    private readonly k: KernelSocket,
    private readonly secrets: TrafficSecretChain | null,
    rekeySupported: boolean,
    /** Longest wait for room in the socket buffer when sending a control record. */
    private readonly controlSendTimeoutMs: number,
    /** The stream was destroyed: stop retrying. */
    private readonly gone: () => boolean,
  ) {
    this.canRekey = rekeySupported && secrets !== null;
    this.counter = new KernelRecordCounter(() => kernelSeq(k, 'tx'));
  }

  get records(): number {
    return this.counter.total;
  }

  refreshRecords(): void {
    this.counter.refresh();
  }

  writeData(chunks: Buffer[], cb: Done): void {
    const raw = this.k.raw;
    for (const c of chunks) this.bytes += c.length;
    if (chunks.length === 1) return rawWrite(raw, chunks[0]!, cb);
    raw.cork();
    for (let i = 0; i < chunks.length - 1; i++) raw.write(chunks[i]!);
    rawWrite(raw, chunks[chunks.length - 1]!, cb);
    raw.uncork();
  }

  /**
   * sendmsg with TLS_SET_RECORD_TYPE. EAGAIN (socket buffer full) is retried
   * with a short backoff; the native poller only watches readability, and
   * control records are rare.
   */
  sendRecord(type: number, data: Buffer, cb: Done): void {
    const { native, fd, events } = this.k;
    const deadline = performance.now() + this.controlSendTimeoutMs;
    let delay = 1;
    const attempt = (): void => {
      if (this.gone()) return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'the connection is closed'));
      let n: number;
      try {
        n = native.sendRecord(fd, type, data);
      } catch (err) {
        const c = classifyKtlsError(err, 'write');
        events.syscallError?.(c);
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS control record send failed: ${c.errno}`, { cause: err }));
      }
      if (n === data.length) return cb();
      if (n >= 0) {
        // A control record is one record; a partial send would split it.
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS control record was sent partially'));
      }
      if (performance.now() >= deadline) {
        return cb(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS control record: socket buffer stayed full'));
      }
      setTimeout(attempt, delay);
      delay = Math.min(delay * 2, 100);
    };
    attempt();
  }

  rekey(): Error | null {
    this.counter.refresh();
    const info = this.secrets!.next();
    try {
      this.k.native.setCryptoInfo(this.k.fd, 'tx', info);
    } catch (e) {
      wipeCryptoInfo(info);
      const c = classifyKtlsError(e, 'rekey_tx');
      this.k.events.syscallError?.(c);
      return new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS TX rekey failed: ${c.errno}`);
    }
    this.counter.rekeyed();
    return null;
  }

  keyUsage(): bigint {
    return kernelSeq(this.k, 'tx');
  }

  wipe(): void {
    this.secrets?.wipe();
  }
}
