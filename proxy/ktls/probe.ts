// What this kernel can do with kTLS, found out once at startup, and the summary
// the decision reads. The parts, by job:
//   probe-host.ts     what the files say (tls module, kernel config, ULP list, NIC offload);
//   probe-trials.ts   the real answer: every setsockopt tried on loopback TCP pairs;
//   this file         every "no" with its reason and what to do about it (pure
//                     functions), and probeKernel(), which never throws.
import { release as osRelease } from 'node:os';
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS, type KernelCipher, type KtlsDirection, type TlsVersion } from '../../native/crypto-info.js';
import { KTLS_OPTIONS, native as getNative, nativeStatus, type KtlsNative, type KtlsOption, type NativeStatus } from '../../native/index.js';
import { ULP_LIST_HIDDEN, probeModule, probeNicOffload, readAvailableUlps, tlsModuleLoaded, type ModuleFacts, type NicOffloadFacts } from './probe-host.js';
import { comboKey, tryKernel, type KernelTrials, type RxPollTrial } from './probe-trials.js';
import { readTlsStat, type TlsStat } from './tls-stat.js';

/** Why kTLS cannot be used at all (closed set: usable as a label value). */
export type KernelUnavailableReason =
  | 'native_unavailable'
  | 'kernel_no_config_tls'
  | 'tls_module_not_loaded'
  | 'kernel_tls_unavailable'
  | 'ulp_refused'
  | 'no_cipher_supported'
  | 'probe_failed';

/** One "no": what, why, and what an operator can do about it. */
export interface ProbeProblem {
  what: string;
  reason: string;
  action: string;
}

/** How one trial went: a socket option; with `action`, the rekey; with the combination, a cipher. */
export interface OptionProbe {
  supported: boolean;
  /** errno name of the refusal; null when supported or not tried. */
  errno: string | null;
  reason: string | null;
}

export interface RekeyProbe extends OptionProbe {
  action: string | null;
}

export interface CipherProbe extends RekeyProbe {
  version: TlsVersion;
  cipher: KernelCipher;
  direction: KtlsDirection;
}

const MODPROBE_ACTION =
  'run `modprobe tls` on the node (or list tls in /etc/modules-load.d/); the container needs no capability for it';

/** Kernel crypto modules behind each cipher, for "what to do" hints. */
const CRYPTO_MODULE: Record<KernelCipher, string> = {
  AES_GCM_128: 'gcm',
  AES_GCM_256: 'gcm',
  CHACHA20_POLY1305: 'chacha20poly1305',
  AES_CCM_128: 'ccm',
};

/** Why TCP_ULP "tls" failed with `errno` on kernel `release`, from what the files say. */
export function ulpVerdict(
  errno: string,
  release: string,
  mod: ModuleFacts,
  ulpList: string[] | null,
): { reason: KernelUnavailableReason; detail: string; action: string } {
  const list = ulpList ? `tcp_available_ulp: "${ulpList.join(' ')}"` : `tcp_available_ulp not visible: ${ULP_LIST_HIDDEN}`;
  if (errno !== 'ENOENT') {
    return {
      reason: 'ulp_refused',
      detail: `the kernel refused TCP_ULP "tls" with ${errno} (${list})`,
      action: 'check seccomp/LSM policy of the container and the kernel log; the sidecar stays in userspace TLS',
    };
  }
  if (mod.config === 'n') {
    return {
      reason: 'kernel_no_config_tls',
      detail: `this kernel (${release}) was built without CONFIG_TLS (${mod.configSource}: "# CONFIG_TLS is not set"); TCP_ULP "tls" gives ENOENT`,
      action: 'run the sidecar on a kernel with CONFIG_TLS=m or =y (all major distribution kernels have it); until then it serves in userspace TLS',
    };
  }
  if (mod.config === 'm' || mod.file !== null) {
    return {
      reason: 'tls_module_not_loaded',
      detail: `the tls module is not loaded and could not be loaded from here (TCP_ULP "tls" gives ENOENT; autoloading needs CAP_NET_ADMIN; ${list})`,
      action: MODPROBE_ACTION,
    };
  }
  return {
    reason: 'kernel_tls_unavailable',
    detail: `the kernel has no "tls" TCP ULP (TCP_ULP "tls" gives ENOENT; ${list}); the kernel config is not visible from here`,
    action: `${MODPROBE_ACTION}; if modprobe fails, the kernel was built without CONFIG_TLS`,
  };
}

function cipherVerdict(errno: string, version: TlsVersion, cipher: KernelCipher, dir: KtlsDirection): { reason: string; action: string } {
  const what = `${version} ${cipher} ${dir.toUpperCase()}`;
  if (errno === 'ENOENT') {
    return {
      reason: `the kernel has no crypto implementation for ${what} (ENOENT)`,
      action: `run \`modprobe ${CRYPTO_MODULE[cipher]}\` on the node, or use another cipher`,
    };
  }
  if (errno === 'EINVAL' || errno === 'ENOPROTOOPT' || errno === 'EOPNOTSUPP') {
    return {
      reason: `this kernel's TLS ULP does not accept ${what} (${errno})`,
      action: 'use a newer kernel for this combination, or let these connections stay in userspace TLS',
    };
  }
  return { reason: `installing ${what} failed with ${errno}`, action: 'check the kernel log; these connections stay in userspace TLS' };
}

/**
 * Every version × cipher × direction with its own verdict, or the global one
 * (`reasonDetail`) when the ULP never attached. A refusal is also a problem.
 */
export function cipherMatrix(trials: KernelTrials | null, reasonDetail: string | null, problems: ProbeProblem[]): CipherProbe[] {
  const out: CipherProbe[] = [];
  for (const version of TLS_VERSIONS) {
    for (const cipher of KERNEL_CIPHERS) {
      for (const direction of KTLS_DIRECTIONS) {
        const tried = trials?.attach === 'ok' ? trials.ciphers.get(comboKey(version, cipher, direction)) : undefined;
        if (tried === null) {
          out.push({ version, cipher, direction, supported: true, errno: null, reason: null, action: null });
        } else if (tried !== undefined) {
          const v = cipherVerdict(tried, version, cipher, direction);
          out.push({ version, cipher, direction, supported: false, errno: tried, reason: v.reason, action: v.action });
          problems.push({ what: `${version} ${cipher} ${direction.toUpperCase()}`, reason: v.reason, action: v.action });
        } else {
          out.push({ version, cipher, direction, supported: false, errno: null, reason: reasonDetail, action: null });
        }
      }
    }
  }
  return out;
}

/** The rekey verdict: a refused second key is a problem; "not tried" is not. */
export function rekeyVerdict(trials: KernelTrials | null, release: string, reasonDetail: string | null, problems: ProbeProblem[]): RekeyProbe {
  const errno = trials?.rekey;
  if (errno === null) return { supported: true, errno: null, reason: null, action: null };
  if (errno === undefined) {
    return { supported: false, errno: null, reason: reasonDetail ?? 'no TLS 1.3 cipher was accepted for TX, so rekey could not be tried', action: null };
  }
  const verdict: RekeyProbe = {
    supported: false,
    errno,
    reason:
      errno === 'EBUSY'
        ? `this kernel (${release}) cannot take a second TLS 1.3 key (EBUSY): KeyUpdate/rekey needs Linux >= 6.14`
        : `a second TLS 1.3 key was refused with ${errno}`,
    action: 'TLS 1.3 connections that see a KeyUpdate cannot stay in the kernel; use Linux >= 6.14 for rekey',
  };
  problems.push({ what: 'TLS 1.3 rekey (KeyUpdate)', reason: verdict.reason ?? '', action: verdict.action ?? '' });
  return verdict;
}

/** Each socket option: as tried, or why it could not be. */
export function optionVerdicts(trials: KernelTrials | null, reasonDetail: string | null): Record<KtlsOption, OptionProbe> {
  const out = {} as Record<KtlsOption, OptionProbe>;
  for (const opt of KTLS_OPTIONS) {
    const t = trials?.options[opt];
    out[opt] = t
      ? { supported: t.supported, errno: t.errno, reason: t.supported ? null : `the kernel refused ${opt}${t.errno ? ` (${t.errno})` : ''}` }
      : { supported: false, errno: null, reason: reasonDetail ?? 'no socket to try it on' };
  }
  return out;
}

/** How the RX readiness trial went (probe-trials.ts rxPollTrial); null: not tried. */
export interface RxPollProbe {
  wholeRecords: boolean;
  partialReadable: boolean | null;
  wholeReadable: boolean | null;
  note: string;
}

/**
 * Whole-record readiness needs both answers: not readable with part of a
 * record, readable with all of it (without the second, the first proves
 * nothing). Any doubt keeps RX reading until EAGAIN, which is safe everywhere.
 */
export function rxPollVerdict(t: RxPollTrial | undefined): RxPollProbe {
  if (!t) return { wholeRecords: false, partialReadable: null, wholeReadable: null, note: 'not tried (no TLS 1.3 AES-GCM-128 RX)' };
  const wholeRecords = !t.partialReadable && t.wholeReadable;
  const note = wholeRecords
    ? 'readable only with whole records: a short read ends a wakeup (level-triggered)'
    : t.partialReadable
      ? 'readable with part of a record: RX reads until EAGAIN, then waits for an edge'
      : 'not readable even with a whole record: RX reads until EAGAIN, then waits for an edge';
  return { wholeRecords, partialReadable: t.partialReadable, wholeReadable: t.wholeReadable, note };
}

export interface KernelProbeDetails {
  release: string;
  /** Wall time of the whole probe. */
  durationMs: number;
  native: NativeStatus;
  ulp: {
    /** tcp_available_ulp lists "tls"; null when the file is not visible (outside the host network namespace). */
    listed: boolean | null;
    availableUlps: string[] | null;
    /** 'ok', the errno name of the refusal, or 'not_tried' (no addon / no loopback pair). */
    attach: string;
  };
  module: ModuleFacts;
  ciphers: CipherProbe[];
  rekey: RekeyProbe;
  options: Record<KtlsOption, OptionProbe>;
  /** How poll() sees a kTLS RX socket holding part of a record (rxPollVerdict). */
  rxPoll: RxPollProbe;
  tlsStat: TlsStat | null;
  nicOffload: NicOffloadFacts;
  problems: ProbeProblem[];
}

/** The summary the decision code uses, plus the details for doctor and metrics. */
export interface KernelProbe {
  /** The TLS ULP attached (CONFIG_TLS present, module loaded or loadable). Structurally a decision.ts KtlsProbeView. */
  kernelTls: boolean;
  /** kTLS works for at least one version × cipher × direction. */
  available: boolean;
  /** TLS 1.3 KeyUpdate: a second TLS_TX is accepted (Linux >= 6.14). */
  rekey: boolean;
  /**
   * poll() reports kTLS RX readable only once a whole record is there: the
   * RX poller may stay level-triggered and end a wakeup at a short read
   * (KernelRx). Otherwise it reads until EAGAIN and waits for an edge.
   */
  rxWholeRecordPoll: boolean;
  /** TLS_RX_EXPECT_NO_PAD is accepted on a TLS 1.3 RX socket (Linux >= 6.0). */
  rxExpectNoPad: boolean;
  /** Why kTLS is not available at all; null when it is. */
  reasonIfNot: KernelUnavailableReason | null;
  /** One human sentence for reasonIfNot. */
  reasonDetail: string | null;
  supports(version: TlsVersion, cipher: KernelCipher, direction: KtlsDirection): boolean;
  /** Why a combination is not supported (human text); null when it is. */
  reasonFor(version: TlsVersion, cipher: KernelCipher, direction: KtlsDirection): string | null;
  details: KernelProbeDetails;
}

export interface ProbeOptions {
  /** Skip `ethtool -k` (tests, or when spawning is unwanted). Default false. */
  skipNicOffload?: boolean;
  /** The addon to use instead of the lazily loaded one (tests). */
  native?: { status: NativeStatus; native: KtlsNative | null };
}

function buildProbe(details: KernelProbeDetails, reasonIfNot: KernelUnavailableReason | null, reasonDetail: string | null): KernelProbe {
  const byKey = new Map(details.ciphers.map((c) => [comboKey(c.version, c.cipher, c.direction), c]));
  const available = reasonIfNot === null;
  return {
    kernelTls: details.ulp.attach === 'ok',
    available,
    rekey: details.rekey.supported,
    rxWholeRecordPoll: details.rxPoll.wholeRecords,
    rxExpectNoPad: details.options.TLS_RX_EXPECT_NO_PAD.supported,
    reasonIfNot,
    reasonDetail,
    supports: (v, c, d) => available && byKey.get(comboKey(v, c, d))?.supported === true,
    reasonFor: (v, c, d) => {
      const entry = byKey.get(comboKey(v, c, d));
      if (entry?.supported) return null;
      return entry?.reason ?? reasonDetail ?? 'not probed';
    },
    details,
  };
}

/** Probes the kernel. Cheap (a few loopback connections); never throws. */
export async function probeKernel(opts: ProbeOptions = {}): Promise<KernelProbe> {
  const started = process.hrtime.bigint();
  const release = osRelease();
  const problems: ProbeProblem[] = [];
  const notTried = { supported: false, errno: null, reason: 'not tried' };
  const details: KernelProbeDetails = {
    release,
    durationMs: 0,
    native: { available: false, reason: 'not checked', path: '' },
    ulp: { listed: null, availableUlps: null, attach: 'not_tried' },
    module: { loaded: false, autoloadedByProbe: false, builtin: null, file: null, modulesDirVisible: false, config: null, configDevice: null, configSource: null },
    ciphers: [],
    rekey: { supported: false, errno: null, reason: null, action: null },
    options: { TLS_TX_ZEROCOPY_RO: { ...notTried }, TLS_RX_EXPECT_NO_PAD: { ...notTried } },
    rxPoll: rxPollVerdict(undefined),
    tlsStat: null,
    nicOffload: { visible: false, note: 'not checked', interfaces: [] },
    problems,
  };
  let reasonIfNot: KernelUnavailableReason | null = null;
  let reasonDetail: string | null = null;
  try {
    const loadedBefore = tlsModuleLoaded();
    const [mod, nic] = await Promise.all([probeModule(release), probeNicOffload(opts.skipNicOffload === true)]);
    details.module = mod;
    details.nicOffload = nic;

    let n: KtlsNative | null;
    if (opts.native) {
      details.native = opts.native.status;
      n = opts.native.native;
    } else {
      details.native = nativeStatus();
      n = details.native.available ? getNative() : null;
    }

    let trials: KernelTrials | null = null;
    if (!n) {
      reasonIfNot = 'native_unavailable';
      reasonDetail = `the native kTLS addon is unavailable: ${details.native.available ? 'unknown' : details.native.reason}`;
      problems.push({ what: 'native addon', reason: reasonDetail, action: 'rebuild it with `node native/build.mjs` (needs g++, make, python3 and Node headers)' });
    } else {
      try {
        trials = await tryKernel(n);
        details.ulp.attach = trials.attach;
      } catch (err) {
        reasonIfNot = 'probe_failed';
        reasonDetail = `could not open a loopback TCP pair to probe the kernel: ${err instanceof Error ? err.message : String(err)}`;
        problems.push({ what: 'kernel probe', reason: reasonDetail, action: 'make sure 127.0.0.1 is usable in the container' });
      }
    }

    // Read after the trials: TCP_ULP "tls" may just have autoloaded the module (with CAP_NET_ADMIN).
    mod.loaded = tlsModuleLoaded();
    mod.autoloadedByProbe = mod.loaded && !loadedBefore;
    details.ulp.availableUlps = await readAvailableUlps();
    if (details.ulp.availableUlps !== null) details.ulp.listed = details.ulp.availableUlps.includes('tls');

    if (trials && trials.attach !== 'ok') {
      const v = ulpVerdict(trials.attach, release, mod, details.ulp.availableUlps);
      reasonIfNot = v.reason;
      reasonDetail = v.detail;
      problems.push({ what: 'kernel TLS (TCP_ULP "tls")', reason: v.detail, action: v.action });
    }

    details.ciphers = cipherMatrix(trials, reasonDetail, problems);
    if (reasonIfNot === null && !details.ciphers.some((c) => c.supported)) {
      reasonIfNot = 'no_cipher_supported';
      reasonDetail = 'the kernel TLS ULP is there, but it refused every cipher';
    }
    details.rekey = rekeyVerdict(trials, release, reasonDetail, problems);
    details.options = optionVerdicts(trials, reasonDetail);
    details.rxPoll = rxPollVerdict(trials?.rxPoll);

    details.tlsStat = await readTlsStat();
    if (details.tlsStat === null && reasonIfNot === null) {
      problems.push({ what: '/proc/net/tls_stat', reason: 'not readable', action: 'kTLS counters will be missing from metrics' });
    }
  } catch (err) {
    reasonIfNot = 'probe_failed';
    reasonDetail = `the kernel probe failed: ${err instanceof Error ? err.message : String(err)}`;
    problems.push({ what: 'kernel probe', reason: reasonDetail, action: 'report this as a bug; the sidecar stays in userspace TLS' });
  }
  details.durationMs = Number(process.hrtime.bigint() - started) / 1e6;
  return buildProbe(details, reasonIfNot, reasonDetail);
}
