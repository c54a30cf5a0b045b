// The install sequence for a handed-off connection (mode tx or txrx):
//
//   1. fd from the raw socket (`_handle.fd`, native/index.ts socketFd).
//   2. setsockopt(TCP_ULP, "tls").                       ─┐ a failure here keeps the
//   3. txrx: decrypt the complete leftover records in JS;  │ connection alive in the JS
//      read exactly the rest of a trailing partial record  │ record layer, reason
//      with recvPlain (poll until complete, bounded); its  │ `install_failed`, errno
//      decrypted content goes first to the front.          │ counted.
//   4. setsockopt(TLS_TX).                                ─┘
//   5. txrx: setsockopt(TLS_RX) at the RX sequence after the leftover. A failure
//      here leaves TX in the kernel and RX not: never a half state — the
//      connection is destroyed (errno counted). TLS 1.3, where the probe found it
//      and ktls.rxExpectNoPad allows: setsockopt(TLS_RX_EXPECT_NO_PAD) (expectNoPad;
//      an optimisation: its failure is counted and changes nothing else).
//   6. Wipe every CryptoInfo and secret copy; keep only what KeyUpdate needs
//      (TLS 1.3: each kernel direction's JS protection, whose traffic secret
//      gives the next key), and the JS RX state in `tx` mode.
//
// Before step 4 nothing is in the kernel: a socket with the ULP attached but no
// keys behaves as plain TCP, so the JS record layer can take over from the very
// state we would have given the kernel.
//
// A `userspace` decision (policy: flag off mid-handshake, cipher not in
// ktls.ciphers, kernel cipher unsupported, ...) skips steps 2-5: the JS record
// layer takes the hand-off state directly, no syscall (installUserspace). Every engine connection
// that ends in userspace runs there, never on Node's TLS over a JS Duplex
// (nodejs/node#35384: an internal assertion that ends the process).

import type { KtlsNative, Poller } from '../../native/index.js';
import { socketFd } from '../../native/index.js';
import type { CryptoInfo } from '../../native/crypto-info.js';
import { wipeCryptoInfo } from '../../native/crypto-info.js';
import { RecordProtection } from '../tls/record-protection.js';
import { AlertDescription } from '../tls/control.js';
import { RecordReader } from '../tls/records.js';
import type { RxEvent } from '../tls/records.js';
import { ErrorCodes, SidecarError } from '../errors.js';
import type { HandoffResult } from '../handshake/engine.js';
import type { RecordLayerEvents, RxSide, TxSide } from './paths.js';
import { RecordLayerStream } from './stream.js';
import type { RecordLayerStreamOptions } from './stream.js';
import { INSTALL_FAILED } from '../ktls/decision.js';
import type { KtlsDecision } from '../ktls/decision.js';
import { classifyKtlsError } from '../ktls/errno.js';
import type { KtlsErrorClass } from '../ktls/errno.js';

export interface InstallEvents extends RecordLayerEvents {
  /** The install failed before any key was in the kernel: the connection continues in userspace. */
  installFailed?(info: KtlsErrorClass): void;
  /** The install failed after TX was in the kernel: the connection was destroyed. */
  installAborted?(info: KtlsErrorClass): void;
}

/** The record layer's own settings (documented on RecordLayerStreamOptions; tests lower the key usage limit). */
type LayerSettings = Pick<RecordLayerStreamOptions, 'rekeySupported' | 'keyUpdateRateLimit' | 'allowHalfOpen' | 'txKeyRecordLimit' | 'keyUsageCheckWrites' | 'splice' | 'rxWholeRecordPoll'>;

export interface InstallInput extends LayerSettings {
  handoff: HandoffResult;
  /** The decision for this connection: `tx` or `txrx`, or `userspace` for the JS record layer alone. */
  decision: KtlsDecision;
  native: KtlsNative;
  /**
   * TLS 1.3 with RX in the kernel: set TLS_RX_EXPECT_NO_PAD (ktls.rxExpectNoPad, and the probe found the
   * option). Default false.
   */
  rxExpectNoPad?: boolean;
  /** Longest wait for the rest of a partial leftover record (default 5000 ms). */
  partialRecordTimeoutMs?: number;
  events?: InstallEvents;
}

export interface InstallResult {
  /** The plaintext stream for the fronts. */
  stream: RecordLayerStream;
  /** `input.decision`, or `install_failed` (userspace) when the keys of a kernel decision never reached it. */
  decision: KtlsDecision;
}

/** Thrown (after destroying the raw socket) when the connection cannot continue. */
export class KtlsInstallError extends SidecarError {
  constructor(message: string, readonly info: KtlsErrorClass | null, cause?: unknown) {
    super(ErrorCodes.KTLS_INSTALL, message, cause === undefined ? undefined : { cause });
  }
}

/**
 * Install kTLS on a handed-off connection. Resolves with the stream (kernel
 * or, after an early failure or for a `userspace` decision, the JS record
 * layer); rejects with KtlsInstallError after destroying the socket when the
 * connection cannot go on (a key already in the kernel and the other failed,
 * or the hand-off state was not valid).
 */
export async function installKtls(input: InstallInput): Promise<InstallResult> {
  // The decision keeps the keys out of the kernel: no syscall at all.
  if (input.decision.mode === 'userspace') return { stream: installUserspace(input), decision: input.decision };
  const { handoff, native, events = {} } = input;
  const { raw } = handoff;
  // JS copies first: the fallback needs exactly the state the kernel would
  // have got, and setCryptoInfo() zeroes what it is given.
  const { txJs, rxJs, reader } = jsState(handoff);
  let initialEvents: RxEvent[] = [];
  const jsStream = (): RecordLayerStream => newStream(input, { side: 'js', protection: txJs }, { side: 'js', reader }, initialEvents);
  const wantRx = input.decision.mode === 'txrx';

  /** Before any key is in the kernel: the JS record layer takes over, nothing lost. */
  const userspace = (info: KtlsErrorClass): InstallResult => {
    events.syscallError?.(info);
    events.installFailed?.(info);
    return { stream: jsStream(), decision: INSTALL_FAILED };
  };

  const fd = socketFd(raw);
  if (fd === null) return userspace({ errno: 'no_fd', kind: 'other', stage: 'ulp' });

  try {
    native.attachUlp(fd);
  } catch (err) {
    return userspace(classifyKtlsError(err, 'ulp'));
  }

  // RX goes to the kernel only if there is something left to receive.
  let rxKernel = wantRx && !handoff.peerEnded;
  if (rxKernel) {
    const drained = drainComplete(reader);
    initialEvents = drained.events;
    if (drained.stopped) {
      // close_notify or a protocol error in the leftover: nothing more to
      // receive in the kernel; the stream handles the event in JS.
      rxKernel = false;
    } else if (reader.missingBytes() > 0) {
      try {
        await readRestOfRecord(native, fd, reader, input.partialRecordTimeoutMs ?? 5000);
      } catch (err) {
        if (raw.destroyed) throw new KtlsInstallError('connection closed during install', null, err);
        return userspace(err instanceof PartialReadError ? err.info : classifyKtlsError(err, 'read_plain'));
      }
      const more = drainComplete(reader);
      initialEvents.push(...more.events);
      if (more.stopped) rxKernel = false;
    }
  }
  if (raw.destroyed) {
    txJs.wipe();
    rxJs.wipe();
    throw new KtlsInstallError('connection closed during install', null);
  }

  const txInfo = txJs.toCryptoInfo();
  try {
    native.setCryptoInfo(fd, 'tx', txInfo);
  } catch (err) {
    wipeCryptoInfo(txInfo);
    return userspace(classifyKtlsError(err, 'install_tx'));
  }
  // ---- TX is in the kernel: from here on, failure destroys the connection. ----

  if (rxKernel) {
    const rxInfo: CryptoInfo = rxJs.toCryptoInfo();
    try {
      native.setCryptoInfo(fd, 'rx', rxInfo);
    } catch (err) {
      wipeCryptoInfo(rxInfo);
      const info = classifyKtlsError(err, 'install_rx');
      events.syscallError?.(info);
      events.installAborted?.(info);
      txJs.wipe();
      rxJs.wipe();
      raw.destroy();
      throw new KtlsInstallError(`kernel TLS RX install failed (${info.errno}) after TX: connection closed`, info, err);
    }
    if (input.rxExpectNoPad === true && handoff.rx.version === 'TLSv1.3') expectNoPad(native, fd, events);
  }

  const rx: RxSide = rxKernel ? { side: 'kernel', keys: keptForKeyUpdate(rxJs) } : { side: 'js', reader };
  const stream = newStream(input, { side: 'kernel', keys: keptForKeyUpdate(txJs) }, rx, initialEvents, fd, native);
  return { stream, decision: input.decision };
}

/**
 * TLS 1.3 puts a record's type after its content and any padding, so the kernel
 * cannot tell a data record before decrypting it: without this option it
 * decrypts every record into a kernel buffer of its own (pages allocated for
 * each record, zeroed where init_on_alloc is on, as in Debian's kernels) and
 * copies the plaintext out. With it, a record is decrypted straight into our
 * read buffer; one that turns out padded or not application data is decrypted
 * again the old way, counted as TlsDecryptRetry (and TlsRxNoPadViolation) in
 * /proc/net/tls_stat, which /metrics exports. The cost of a peer that pads is a
 * second decryption of its padded records, nothing else; ktls.rxExpectNoPad:
 * false turns it off. In the kernel lab the allocation took 43 of the 99 µs of a
 * 1 KiB request's recvmsg (docs/ktls.md §9). An optimisation only: if the
 * kernel refuses it, the error is counted and RX stays in the kernel as it is.
 */
function expectNoPad(native: KtlsNative, fd: number, events: InstallEvents): void {
  try {
    native.setOption(fd, 'TLS_RX_EXPECT_NO_PAD', true);
  } catch (err) {
    events.syscallError?.(classifyKtlsError(err, 'option'));
  }
}

/**
 * The whole record layer in JS from the hand-off state (`record_layer: js`):
 * what a `userspace` decision runs, no syscall. Throws KtlsInstallError
 * (socket destroyed) when the hand-off state is not a valid CryptoInfo.
 */
export function installUserspace(input: Omit<LayerSettings, 'rekeySupported'> & Pick<InstallInput, 'handoff' | 'events'>): RecordLayerStream {
  const { txJs, reader } = jsState(input.handoff);
  // rekeySupported is about the kernel; both sides here are in JS.
  return newStream({ ...input, rekeySupported: false }, { side: 'js', protection: txJs }, { side: 'js', reader }, []);
}

/** Both directions' JS record protection from the hand-off (whose key copies are wiped); the leftover is queued. */
function jsState(handoff: HandoffResult): { txJs: RecordProtection; rxJs: RecordProtection; reader: RecordReader } {
  let txJs: RecordProtection;
  let rxJs: RecordProtection;
  try {
    txJs = RecordProtection.fromCryptoInfo(handoff.tx, handoff.txSecret);
    rxJs = RecordProtection.fromCryptoInfo(handoff.rx, handoff.rxSecret);
  } catch (err) {
    wipeHandoff(handoff);
    handoff.raw.destroy();
    throw new KtlsInstallError('handoff state is not a valid CryptoInfo', null, err);
  }
  wipeHandoff(handoff);
  const reader = new RecordReader(rxJs);
  reader.push(handoff.leftover);
  return { txJs, rxJs, reader };
}

/** The stream over `tx` and `rx`, with the settings every record layer of this connection shares. */
function newStream(input: LayerSettings & Pick<InstallInput, 'handoff' | 'events'>, tx: TxSide, rx: RxSide,
  initialEvents: RxEvent[], fd = -1, native: KtlsNative | null = null): RecordLayerStream {
  const { handoff, events = {}, rekeySupported, keyUpdateRateLimit, allowHalfOpen, txKeyRecordLimit, keyUsageCheckWrites, splice, rxWholeRecordPoll } = input;
  const { raw, peerEnded, tx: { version, cipher } } = handoff;
  return new RecordLayerStream({
    raw, fd, native, version, cipher, tx, rx, initialEvents, peerEnded, events,
    rekeySupported, keyUpdateRateLimit, allowHalfOpen, txKeyRecordLimit, keyUsageCheckWrites, splice, rxWholeRecordPoll,
  });
}

/**
 * A kernel direction's JS protection, kept for TLS 1.3 KeyUpdate at its
 * *current* secret (a leftover KeyUpdate may have advanced it); without a
 * traffic secret (TLS 1.2) its keys are wiped.
 */
function keptForKeyUpdate(rp: RecordProtection): RecordProtection | null {
  if (rp.canKeyUpdate) return rp;
  rp.wipe();
  return null;
}

/** Zero every key copy a hand-off holds (after the JS copies are made, or when it will not be installed). */
export function wipeHandoff(h: HandoffResult): void {
  wipeCryptoInfo(h.tx);
  wipeCryptoInfo(h.rx);
  h.txSecret?.fill(0);
  h.rxSecret?.fill(0);
}

/** Decrypt every complete buffered record; stop at close_notify or a fatal event. */
function drainComplete(reader: RecordReader): { events: RxEvent[]; stopped: boolean } {
  const out: RxEvent[] = [];
  for (let ev = reader.next(); ev; ev = reader.next()) {
    out.push(ev);
    if (ev.kind === 'fatal') return { events: out, stopped: true };
    if (ev.kind === 'alert' && ev.description === AlertDescription.CLOSE_NOTIFY) return { events: out, stopped: true };
  }
  return { events: out, stopped: false };
}

class PartialReadError extends Error {
  constructor(readonly info: KtlsErrorClass, message: string) {
    super(message);
  }
}

/**
 * Read exactly the bytes that complete the record at the head of `reader`
 * (never more: the kernel must start on the next record). Waits for
 * readability with the native poller; bounded by `timeoutMs`.
 */
function readRestOfRecord(native: KtlsNative, fd: number, reader: RecordReader, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let poller: Poller | null = null;
    let finished = false;
    const finish = (err?: Error): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      poller?.close();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => {
      finish(new PartialReadError({ errno: 'ETIMEDOUT', kind: 'other', stage: 'read_plain' },
        'timed out waiting for the rest of a partial record'));
    }, timeoutMs);
    // True on EAGAIN (read until the socket was empty): the poller waits for a new event, see KernelRx.onReadable.
    const tryRead = (): boolean => {
      while (!finished) {
        const need = reader.missingBytes();
        if (need === 0) {
          finish();
          return false;
        }
        const buf = Buffer.allocUnsafe(need);
        let r;
        try {
          r = native.recvPlain(fd, buf);
        } catch (err) {
          finish(new PartialReadError(classifyKtlsError(err, 'read_plain'), 'reading the partial record failed'));
          return false;
        }
        if (r === null) return true; // EAGAIN: wait for the poller
        if (r.eof || r.bytes === 0) {
          finish(new PartialReadError({ errno: 'EOF', kind: 'closed', stage: 'read_plain' },
            'peer closed in the middle of a record'));
          return false;
        }
        reader.push(buf.subarray(0, r.bytes));
      }
      return false;
    };
    try {
      poller = native.createPoller(fd, (err) => {
        if (!err) return tryRead();
        finish(new PartialReadError(classifyKtlsError(err, 'read_plain'), 'polling failed'));
        return false;
      });
    } catch (err) {
      finish(new PartialReadError(classifyKtlsError(err, 'read_plain'), 'poller creation failed'));
      return;
    }
    tryRead();
    if (!finished) poller.start();
  });
}
