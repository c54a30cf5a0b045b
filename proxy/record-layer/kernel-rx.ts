// RX in the kernel (kTLS). libuv never reads the fd again (the engine
// stopped it). A native poller on a dup of the fd wakes us; recvmsg +
// TLS_GET_RECORD_TYPE reads one record type at a time into a reusable
// buffer. Never a plain read(): a control record on a plain read is EIO.
// Alerts and post-handshake messages become the same events the JS reader
// produces, for the control state machine.

import type { NativeSyscallError, Poller } from '../../native/index.js';
import { wipeCryptoInfo } from '../../native/crypto-info.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { KtlsStage } from '../vocabulary.js';
import { ContentType, PostHandshakeParser } from '../tls/control.js';
import { recordEvents } from '../tls/records.js';
import type { TrafficSecretChain } from './keyupdate.js';
import { kernelSeq } from './paths.js';
import type { KernelSocket, RxPath, RxSink } from './paths.js';
import { KernelRecordCounter } from './stats.js';

const RX_BUFFER_SIZE = 64 * 1024;
/** Records read per poller wakeup before yielding (the poll is level-triggered, so nothing is lost). */
const RX_BATCH = 32;

export class KernelRx implements RxPath {
  readonly where = 'kernel';
  private readonly counter: KernelRecordCounter;
  private readonly parser: PostHandshakeParser;
  private poller: Poller | null = null;
  private buf: Buffer | null = null;

  constructor(
    private readonly k: KernelSocket,
    private readonly secrets: TrafficSecretChain | null,
    private readonly rekeySupported: boolean,
    tls13: boolean,
    private readonly sink: RxSink,
  ) {
    this.parser = new PostHandshakeParser(tls13);
    this.counter = new KernelRecordCounter(() => kernelSeq(k, 'rx'));
  }

  get records(): number {
    return this.counter.total;
  }

  refreshRecords(): void {
    this.counter.refresh();
  }

  start(peerEnded: boolean): void {
    if (peerEnded) {
      // Nothing can follow the client's FIN; the kernel has nothing to read.
      this.sink.peerFin();
      return;
    }
    this.buf = Buffer.allocUnsafe(RX_BUFFER_SIZE);
    try {
      this.poller = this.k.native.createPoller(this.k.fd, (err) => this.onReadable(err));
    } catch (err) {
      this.syscallFailed(err, 'poll');
      return;
    }
    if (this.sink.wanted()) this.poller.start();
  }

  pause(): void {
    this.poller?.stop();
  }

  resume(): void {
    this.poller?.start();
  }

  stop(): void {
    this.poller?.stop();
  }

  rekey(): 'ok' | 'unsupported' | 'failed' {
    // Without it the kernel would decrypt the next record with the old key.
    if (!this.rekeySupported || !this.secrets) return 'unsupported';
    this.counter.refresh();
    const info = this.secrets.next();
    try {
      this.k.native.setCryptoInfo(this.k.fd, 'rx', info);
    } catch (err) {
      wipeCryptoInfo(info);
      const c = classifyKtlsError(err, 'rekey_rx');
      this.k.events.syscallError?.(c);
      return c.kind === 'busy' || c.kind === 'unsupported' ? 'unsupported' : 'failed';
    }
    this.counter.rekeyed();
    return 'ok';
  }

  close(): void {
    if (this.poller) {
      this.poller.close();
      this.poller = null;
    }
    this.secrets?.wipe();
    this.buf?.fill(0);
  }

  private onReadable(err: NativeSyscallError | null): void {
    if (!this.sink.live()) return;
    if (err) {
      this.syscallFailed(err, 'poll');
      return;
    }
    const buf = this.buf!;
    for (let i = 0; i < RX_BATCH && this.sink.wanted(); i++) {
      let r;
      try {
        r = this.k.native.recvRecord(this.k.fd, buf);
      } catch (e) {
        this.onRecvError(e);
        return;
      }
      if (r === null) return; // EAGAIN: the poller calls again
      if (r.eof) {
        this.sink.peerFin();
        return;
      }
      if (r.type === ContentType.APPLICATION_DATA) {
        // The buffer is reused: hand the front its own copy.
        if (r.bytes > 0) this.sink.event({ kind: 'data', data: Buffer.from(buf.subarray(0, r.bytes)) }, 'kernel', false);
        continue;
      }
      for (const e of recordEvents(r.type, Buffer.from(buf.subarray(0, r.bytes)), this.parser)) {
        if (!this.sink.event(e, 'kernel', false)) return;
      }
    }
  }

  private onRecvError(err: unknown): void {
    const info = classifyKtlsError(err, 'read');
    this.k.events.syscallError?.(info);
    switch (info.kind) {
      case 'would_block':
        return;
      case 'decrypt_error':
        this.k.events.decryptError?.('kernel');
        this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, 'kernel TLS: a record failed authentication (EBADMSG)'));
        return;
      case 'closed':
        this.sink.destroy();
        return;
      default:
        // EKEYEXPIRED here means a KeyUpdate was consumed without a rekey: a bug, never a half state.
        this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS receive failed: ${info.errno}`, { cause: err }));
    }
  }

  private syscallFailed(err: unknown, stage: KtlsStage): void {
    const info = classifyKtlsError(err, stage);
    this.k.events.syscallError?.(info);
    this.sink.destroy(new SidecarError(ErrorCodes.KTLS_CONTROL, `kernel TLS ${stage} failed: ${info.errno}`, { cause: err }));
  }
}
