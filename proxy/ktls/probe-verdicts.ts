// From what was tried (probe-trials.ts) and what the files say (probe-host.ts)
// to verdicts: for every "no", the reason in words and what an operator can do
// about it. Pure functions: no I/O.
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS, type KernelCipher, type KtlsDirection, type TlsVersion } from '../../native/crypto-info.js';
import { KTLS_OPTIONS, type KtlsOption } from '../../native/index.js';
import type { ModuleFacts } from './probe-host.js';
import { comboKey, type KernelTrials } from './probe-trials.js';

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

export interface CipherProbe {
  version: TlsVersion;
  cipher: KernelCipher;
  direction: KtlsDirection;
  supported: boolean;
  /** errno name of the refusal; null when supported or not tried. */
  errno: string | null;
  reason: string | null;
  action: string | null;
}

export interface OptionProbe {
  supported: boolean;
  errno: string | null;
  reason: string | null;
}

export interface RekeyProbe {
  supported: boolean;
  errno: string | null;
  reason: string | null;
  action: string | null;
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
  const list = ulpList ? `tcp_available_ulp: "${ulpList.join(' ')}"` : 'tcp_available_ulp not readable';
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
