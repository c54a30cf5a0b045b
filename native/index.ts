// Typed, lazy loader of the kTLS native addon (native/build/Release/ktls_native.node).
//
// The addon makes kTLS syscalls and nothing else: no policy, no TLS logic. It is
// optional: when it is missing or fails to load, `nativeStatus()` says why and the
// sidecar stays in userspace TLS (ktls_reason="native_unavailable"). Loading happens
// on first use, never at import time, and never throws out of `nativeStatus()`.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CryptoInfo, KernelCipher, KtlsDirection, TlsVersion } from './crypto-info.js';

export type { CryptoInfo, KernelCipher, KtlsDirection, TlsVersion };

/** Why the addon is (not) usable. `reason` is for humans (doctor, logs); it never holds secrets. */
export type NativeStatus = { available: true; path: string } | { available: false; reason: string; path: string };

/** Socket options of SOL_TLS that take an int on/off value. */
export const KTLS_OPTIONS = ['TLS_TX_ZEROCOPY_RO', 'TLS_RX_EXPECT_NO_PAD'] as const;
export type KtlsOption = (typeof KTLS_OPTIONS)[number];

/** What `getCryptoInfo` reads back. Never the key. An unknown kernel value comes back as its number. */
export interface InstalledCryptoInfo {
  version: TlsVersion | number;
  cipher: KernelCipher | number;
  /** Sequence number of the next record the kernel will protect (TX) or expects (RX). */
  recSeq: bigint;
}

export interface RecvRecordResult {
  /** TLS content type of the bytes (23 application data, 21 alert, 22 handshake); 0 = no record-type cmsg (EOF, or no kTLS RX). */
  type: number;
  bytes: number;
  /** The peer sent FIN (bytes is 0). */
  eof: boolean;
}

export interface RecvPlainResult {
  bytes: number;
  eof: boolean;
}

/** A read-readiness watcher on a socket fd, in the addon's private epoll set (see createPoller). */
export interface Poller {
  /**
   * Start (or resume) calling onReadable whenever the socket is readable. Level-triggered: read until EAGAIN or
   * stop(). An onReadable that returns `true` (the fd holds nothing more to read now: it read until EAGAIN, or a
   * plain TCP recv came back short on an event without a hang-up) is next called on a new event only
   * (edge-triggered): 6.1 keeps a kTLS RX socket readable while only part of a record has arrived, and a
   * level-triggered reader would be called again and again until the rest comes.
   */
  start(): void;
  stop(): void;
  /** Stops and removes the fd from the addon's epoll set. Call it before the socket is closed. Idempotent. */
  close(): void;
}

/** AEAD open under one key (see createAeadOpener). */
export interface NativeAeadOpener {
  /**
   * Verify and decrypt `sealed` (ciphertext || 16-byte tag) with a 12-byte nonce and additional data into `out`
   * (at least the ciphertext's length): the plaintext length, or -1 when it does not authenticate (then `out`
   * holds no plaintext). Throws after wipe().
   */
  open(nonce: Buffer, aad: Buffer, sealed: Buffer, out: Buffer): number;
  /** Free the context (OpenSSL cleanses the key schedule). Idempotent. */
  wipe(): void;
}

/** How a splice pump run ended (see SplicePump). */
export type SpliceEnd = 'budget' | 'eof' | 'stopped' | 'error';

export interface SpliceResult {
  /** Bytes written to `to` during this run (start() .. onDone). */
  bytes: number;
  end: SpliceEnd;
  /** With end 'error' only: the failed call; err.syscall is 'splice_in' (reading `from` into the pipe),
   *  'splice_out' (pipe into `to`), 'epoll_ctl' or 'pipe2' ('epoll_wait' / 'uv_poll' if waiting itself failed). */
  error: NativeSyscallError | null;
}

/**
 * Moves bytes from one socket to another in the kernel: splice(2) `from` -> pipe -> `to`,
 * non-blocking, driven by readiness in the addon's private epoll set. Holds a pipe (2 fds) only
 * while bytes are in flight (taken from the environment's pool, given back empty): an idle pump,
 * even one whose run waits for bytes, costs no fd.
 * JS must have flushed its own writes on `to` and stopped reading `from` before start(),
 * and gets both sockets back after onDone.
 */
export interface SplicePump {
  /** Move up to `budget` bytes (0 = until EOF of `from`) from `from` to `to` through the pump's pipe, in the
   *  kernel. One run at a time (throws if a run is active or the pump is closed). onDone ends each run exactly
   *  once, on the event loop, never synchronously inside start(). */
  start(budget: number): void;
  /** End the current run: no more reads from `from`; bytes already in the pipe are still written to `to`;
   *  then onDone({ end: 'stopped' }). No-op without a run. (If EOF or the budget already ended the reads,
   *  the run ends with that instead.) */
  stop(): void;
  /** Bytes written to `to` in the current (or last) run so far: metrics read it live during long runs. */
  moved(): number;
  /** Release pipe and registrations now; an active run ends WITHOUT a callback. Idempotent. Call before either
   *  socket is closed. */
  close(): void;
}

export interface KtlsNativeConstants {
  readonly SOL_TLS: number;
  readonly SOL_TCP: number;
  readonly TCP_ULP: number;
  readonly TLS_TX: number;
  readonly TLS_RX: number;
  readonly TLS_TX_ZEROCOPY_RO: number;
  readonly TLS_RX_EXPECT_NO_PAD: number;
  readonly TLS_SET_RECORD_TYPE: number;
  readonly TLS_GET_RECORD_TYPE: number;
  readonly TLS_1_2_VERSION: number;
  readonly TLS_1_3_VERSION: number;
  readonly TLS_CIPHER_AES_GCM_128: number;
  readonly TLS_CIPHER_AES_GCM_256: number;
  readonly TLS_CIPHER_CHACHA20_POLY1305: number;
  readonly TLS_CIPHER_AES_CCM_128: number;
  readonly CRYPTO_INFO_SIZE_AES_GCM_128: number;
  readonly CRYPTO_INFO_SIZE_AES_GCM_256: number;
  readonly CRYPTO_INFO_SIZE_CHACHA20_POLY1305: number;
  readonly CRYPTO_INFO_SIZE_AES_CCM_128: number;
  /** False when the build's <linux/tls.h> lacked the name (the number was defined by hand). */
  readonly HEADER_HAS_TLS_TX_ZEROCOPY_RO: boolean;
  readonly HEADER_HAS_TLS_RX_EXPECT_NO_PAD: boolean;
}

/**
 * The syscalls. Every failed syscall throws a NativeSyscallError synchronously; nothing
 * blocks (MSG_DONTWAIT everywhere). Wrong argument types throw a TypeError.
 */
export interface KtlsNative {
  /** setsockopt(SOL_TCP, TCP_ULP, "tls"). The socket must be connected. */
  attachUlp(fd: number): void;
  /**
   * setsockopt(SOL_TLS, TLS_TX | TLS_RX) with the <linux/tls.h> struct for info.cipher.
   * Zeroes info.key, info.iv and info.salt (and the C++ copy) afterwards, on success and
   * on failure alike. Wrong lengths throw EINVAL before any syscall.
   */
  setCryptoInfo(fd: number, dir: KtlsDirection, info: CryptoInfo): void;
  /** getsockopt(SOL_TLS, TLS_TX | TLS_RX): version, cipher, next sequence number. The key is wiped in C++. */
  getCryptoInfo(fd: number, dir: KtlsDirection): InstalledCryptoInfo;
  setOption(fd: number, opt: KtlsOption, on: boolean): void;
  getOption(fd: number, opt: KtlsOption): boolean;
  /** recvmsg(MSG_DONTWAIT) with a TLS_GET_RECORD_TYPE cmsg into buf. null = EAGAIN; bytes 0 + eof = peer FIN. */
  recvRecord(fd: number, buf: Buffer): RecvRecordResult | null;
  /** sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) with TLS_SET_RECORD_TYPE = type (1..255). Bytes sent (may be partial), or -1 on EAGAIN. */
  sendRecord(fd: number, type: number, data: Buffer): number;
  /**
   * send(MSG_DONTWAIT | MSG_NOSIGNAL) of application data (the kernel makes the records once TLS_TX is set).
   * Bytes sent (may be partial), or -1 on EAGAIN.
   */
  sendPlain(fd: number, data: Buffer): number;
  /** Plain recv(MSG_DONTWAIT) of at most buf.length bytes: only before TLS_RX is installed (partial leftover record). */
  recvPlain(fd: number, buf: Buffer): RecvPlainResult | null;
  /**
   * Readiness of the socket for reading without libuv's own handle: the fd itself in the addon's
   * private epoll set (one epoll fd per process, watched by one uv_poll; libuv refuses a second
   * watcher on the same fd, a separate epoll set does not). No extra fd per poller.
   * onReadable(err, hangup) runs on the event loop; err is set when polling itself failed; hangup is true when
   * the event also reported EPOLLRDHUP/EPOLLHUP/EPOLLERR (undefined from an addon built before it was passed).
   * A bad fd throws NativeSyscallError syscall 'epoll_ctl'.
   */
  createPoller(fd: number, onReadable: (err: NativeSyscallError | null, hangup?: boolean) => boolean | void): Poller;
  /**
   * A splice pump from `fromFd` to `toFd` (both sockets, O_NONBLOCK as libuv leaves them).
   * Registers both fds now ('epoll_ctl': a failure throws); takes a pipe only when a run reads
   * (a failure there ends the run 'error', syscall 'pipe2'). onDone runs once per run, on the
   * event loop.
   */
  createSplicePump(fromFd: number, toFd: number, onDone: (r: SpliceResult) => void): SplicePump;
  /** Empty pipes kept for reuse by splice pumps (at most 64; 2 fds each). */
  splicePipesIdle(): number;
  /**
   * One key's AEAD opener (OpenSSL context kept across records; the key is copied into it, `key` is not kept).
   * 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305'; anything else, or a key of the wrong length, throws a
   * TypeError.
   */
  createAeadOpener(algorithm: string, key: Buffer): NativeAeadOpener;
  readonly constants: KtlsNativeConstants;
}

// Linux errno names for numbers that os.constants.errno does not carry (Node lists
// only libuv's set). Values from asm-generic/errno.h (x86_64, arm64 and most others).
const EXTRA_ERRNO: Readonly<Record<number, string>> = {
  61: 'ENODATA',
  74: 'EBADMSG',
  126: 'ENOKEY',
  127: 'EKEYEXPIRED',
  128: 'EKEYREVOKED',
  129: 'EKEYREJECTED',
};
// Where two names share a number, the one the kernel docs use for kTLS.
const PREFERRED: ReadonlySet<string> = new Set(['EAGAIN', 'EOPNOTSUPP', 'EDEADLK']);

const errnoNames: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>();
  for (const [name, value] of Object.entries(osConstants.errno)) {
    if (!m.has(value) || PREFERRED.has(name)) m.set(value, name);
  }
  for (const [value, name] of Object.entries(EXTRA_ERRNO)) if (!m.has(Number(value))) m.set(Number(value), name);
  return m;
})();

/** The errno name ('EBADMSG') of a number, or `E<number>` when unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** A failed syscall of the addon. `code` is the errno name; the message never carries key material. */
export class NativeSyscallError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(errno: number, syscall: string, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall} failed: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'NativeSyscallError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** An AEAD opener's OpenSSL context, held by JS as an opaque External (native/src/aead.cc). */
declare const aeadHandle: unique symbol;
type AeadHandle = { readonly [aeadHandle]: true };

/**
 * What the .node file exports: KtlsNative, except what loadNative() builds over it in JS:
 * createAeadOpener from the aead* calls, and recvRecord / recvPlain from calls that answer with
 * one number (a result object made by the addon cost more than the receive's own user time).
 */
interface AddonExports extends Omit<KtlsNative, 'createAeadOpener' | 'recvRecord' | 'recvPlain'> {
  setErrorClass(cls: typeof NativeSyscallError): void;
  /** bytes * 256 + record type, or -1 on EAGAIN. */
  recvRecordPacked(fd: number, buf: Buffer): number;
  /** bytes (0 with a non-empty buf: EOF), or -1 on EAGAIN. */
  recvPlainBytes(fd: number, buf: Buffer): number;
  aeadCreate(algorithm: string, key: Buffer): AeadHandle;
  aeadOpen(handle: AeadHandle, nonce: Buffer, aad: Buffer, sealed: Buffer, out: Buffer): number;
  aeadWipe(handle: AeadHandle): void;
}

/**
 * The opener over the addon's handle functions: a plain function call per record, where a
 * method of a wrapped native object paid an unwrap (a property lookup) per call.
 */
function aeadOpenerOf(addon: AddonExports): KtlsNative['createAeadOpener'] {
  return (algorithm, key) => {
    const handle = addon.aeadCreate(algorithm, key);
    return {
      open: (nonce, aad, sealed, out) => addon.aeadOpen(handle, nonce, aad, sealed, out),
      wipe: () => addon.aeadWipe(handle),
    };
  };
}

/** Package root: the nearest ancestor with native/binding.gyp (works from native/ and dist/native/). */
function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  let dir = here;
  for (;;) {
    if (existsSync(join(dir, 'native', 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(here, '..');
    dir = up;
  }
}

/** Where the addon is expected. KTLS_SIDECAR_NATIVE_PATH overrides (tests, unusual layouts). */
export function defaultAddonPath(): string {
  const override = process.env['KTLS_SIDECAR_NATIVE_PATH'];
  if (override) return resolve(override);
  return join(packageRoot(), 'native', 'build', 'Release', 'ktls_native.node');
}

export interface LoadResult {
  status: NativeStatus;
  native: KtlsNative | null;
}

const requireAddon = createRequire(import.meta.url);

/** Loads the addon at `path` (no caching). Never throws: failures are in `status.reason`. */
export function loadNative(path: string): LoadResult {
  if (process.platform !== 'linux') {
    return { status: { available: false, reason: `kTLS is Linux-only (platform ${process.platform})`, path }, native: null };
  }
  if (!existsSync(path)) {
    let why = 'the addon was not built';
    const failure = join(dirname(dirname(path)), 'build-failure.txt');
    try {
      why = `the addon build failed: ${readFileSync(failure, 'utf8').trim()}`;
    } catch {
      // no record of a failed build: it was never attempted (e.g. --ignore-scripts)
    }
    return {
      status: { available: false, reason: `${why} (${path} is missing; run \`node native/build.mjs\`)`, path },
      native: null,
    };
  }
  try {
    const addon = requireAddon(path) as AddonExports;
    if (typeof addon.setErrorClass !== 'function' || typeof addon.setCryptoInfo !== 'function') {
      return { status: { available: false, reason: `${path} is not the ktls-sidecar addon`, path }, native: null };
    }
    if (typeof addon.createSplicePump !== 'function' || typeof addon.aeadOpen !== 'function' || typeof addon.recvRecordPacked !== 'function') {
      return { status: { available: false, reason: `${path} is an older build of the addon (no splice pump, AEAD handle or one-number receives; run \`node native/build.mjs\`)`, path }, native: null };
    }
    addon.setErrorClass(NativeSyscallError);
    const ktls: KtlsNative = Object.assign(addon, {
      createAeadOpener: aeadOpenerOf(addon),
      recvRecord(fd: number, buf: Buffer): RecvRecordResult | null {
        const v = addon.recvRecordPacked(fd, buf);
        if (v < 0) return null;
        const type = v % 256;
        const bytes = (v - type) / 256;
        return { type, bytes, eof: bytes === 0 && buf.length > 0 };
      },
      recvPlain(fd: number, buf: Buffer): RecvPlainResult | null {
        const bytes = addon.recvPlainBytes(fd, buf);
        return bytes < 0 ? null : { bytes, eof: bytes === 0 && buf.length > 0 };
      },
    });
    return { status: { available: true, path }, native: ktls };
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return { status: { available: false, reason: `the addon failed to load: ${msg}`, path }, native: null };
  }
}

let loaded: LoadResult | undefined;

function load(): LoadResult {
  loaded ??= loadNative(defaultAddonPath());
  return loaded;
}

/** Lazy: the first call tries to load the addon. Never throws. */
export function nativeStatus(): NativeStatus {
  return load().status;
}

/** The code of NativeUnavailableError (listed with the project's other codes in proxy/errors.ts). */
export const NATIVE_UNAVAILABLE_CODE = 'ERR_KTLS_SIDECAR_NATIVE_UNAVAILABLE';

/** The addon is missing or failed to load; the message says why (never secrets). */
export class NativeUnavailableError extends Error {
  readonly code = NATIVE_UNAVAILABLE_CODE;

  constructor(reason: string) {
    super(`native kTLS addon unavailable: ${reason}`);
    this.name = 'NativeUnavailableError';
  }
}

/** The addon. Throws ERR_KTLS_SIDECAR_NATIVE_UNAVAILABLE (with the reason) when it is not available. */
export function native(): KtlsNative {
  const r = load();
  if (r.native) return r.native;
  const reason = r.status.available ? 'unknown' : r.status.reason;
  throw new NativeUnavailableError(reason);
}

/**
 * The file descriptor of a net.Socket / tls.TLSSocket, or null.
 *
 * Node has no public API for it: this reads the internal `socket._handle.fd` (a TCP
 * wrap; stable across Node 12-24, and the same number on a server-side TLSSocket as on
 * its raw socket). Anything but a non-negative integer (no handle yet, a closed socket,
 * a pipe on another platform: -1) gives null, which callers treat like native_unavailable
 * with reason `no_fd`.
 */
export function socketFd(socket: object): number | null {
  // `_handle` is internal and untyped; narrow it step by step instead of using `any`.
  const handle = (socket as { _handle?: unknown })._handle;
  if (typeof handle !== 'object' || handle === null) return null;
  const fd = (handle as { fd?: unknown }).fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : null;
}
