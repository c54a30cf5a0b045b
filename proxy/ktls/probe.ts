// What this kernel can do with kTLS, found out once at startup, and the summary
// the decision reads. The parts, by job:
//   probe-host.ts     what the files say (tls module, kernel config, ULP list, NIC offload);
//   probe-trials.ts   the real answer: every setsockopt tried on loopback TCP pairs;
//   probe-verdicts.ts every "no" with its reason and what to do about it.
// probeKernel() never throws.
import { release as osRelease } from 'node:os';
import type { KernelCipher, KtlsDirection, TlsVersion } from '../../native/crypto-info.js';
import { native as getNative, nativeStatus, type KtlsNative, type KtlsOption, type NativeStatus } from '../../native/index.js';
import { probeModule, probeNicOffload, readAvailableUlps, tlsModuleLoaded, type ModuleFacts, type NicOffloadFacts } from './probe-host.js';
import { comboKey, tryKernel, type KernelTrials } from './probe-trials.js';
import {
  cipherMatrix,
  optionVerdicts,
  rekeyVerdict,
  ulpVerdict,
  type CipherProbe,
  type KernelUnavailableReason,
  type OptionProbe,
  type ProbeProblem,
  type RekeyProbe,
} from './probe-verdicts.js';
import { readTlsStat, type TlsStat } from './tls-stat.js';

export interface KernelProbeDetails {
  release: string;
  /** Wall time of the whole probe. */
  durationMs: number;
  native: NativeStatus;
  ulp: {
    /** tcp_available_ulp lists "tls"; null when the file is not readable. */
    listed: boolean | null;
    availableUlps: string[] | null;
    /** 'ok', the errno name of the refusal, or 'not_tried' (no addon / no loopback pair). */
    attach: string;
  };
  module: ModuleFacts;
  ciphers: CipherProbe[];
  rekey: RekeyProbe;
  options: Record<KtlsOption, OptionProbe>;
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
    if (!nic.visible && opts.skipNicOffload !== true) problems.push({ what: 'NIC TLS offload', reason: nic.note, action: 'none needed: software kTLS does not need it' });

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
