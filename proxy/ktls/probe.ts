// What this kernel can do with kTLS, found out once at startup.
//
// Files tell where the tls module stands (tcp_available_ulp, /sys/module/tls,
// modules.dep/builtin, the kernel config); the real answer comes from trying: the
// ULP and every cipher × TLS version × direction are installed for real on
// loopback TCP pairs with throw-away random keys (as rustls' ktls crate does),
// and a TLS 1.3 TX key is set twice to see whether rekey works (>= 6.14; EBUSY before).
// Every "no" carries the reason and what to do about it. probeKernel() never throws.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { release as osRelease } from 'node:os';
import { gunzipSync } from 'node:zlib';
import { KERNEL_CIPHERS, KTLS_DIRECTIONS, TLS_VERSIONS } from '../../native/crypto-info.js';
import type { KernelCipher, KtlsDirection, TlsVersion } from '../../native/crypto-info.js';
import type { KtlsNative, KtlsOption, NativeStatus } from '../../native/index.js';
import { native as getNative, nativeStatus, socketFd } from '../../native/index.js';
import { classifyKtlsError } from './errno.js';
import type { TlsStat } from './tls-stat.js';
import { readTlsStat } from './tls-stat.js';

export const KTLS_OPTIONS: readonly KtlsOption[] = ['TLS_TX_ZEROCOPY_RO', 'TLS_RX_EXPECT_NO_PAD'];

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
  module: {
    /** /sys/module/tls exists (loaded, or built in), after the probe. */
    loaded: boolean;
    /** The probe's own TCP_ULP "tls" loaded the module (root/CAP_NET_ADMIN only). */
    autoloadedByProbe: boolean;
    /** modules.builtin lists tls.ko; null when /lib/modules/<release> is not visible. */
    builtin: boolean | null;
    /** Path of tls.ko* under /lib/modules/<release>; null when not found or not visible. */
    file: string | null;
    modulesDirVisible: boolean;
    /** CONFIG_TLS: 'y', 'm', 'n' (not set), or null when no config is visible. */
    config: 'y' | 'm' | 'n' | null;
    /** CONFIG_TLS_DEVICE (NIC offload support). */
    configDevice: 'y' | 'm' | 'n' | null;
    configSource: string | null;
  };
  ciphers: CipherProbe[];
  rekey: { supported: boolean; errno: string | null; reason: string | null; action: string | null };
  options: Record<KtlsOption, OptionProbe>;
  tlsStat: TlsStat | null;
  nicOffload: {
    visible: boolean;
    note: string;
    interfaces: Array<{ name: string; tx: boolean | null; rx: boolean | null }>;
  };
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

const MODPROBE_ACTION =
  'run `modprobe tls` on the node (or list tls in /etc/modules-load.d/); the container needs no capability for it';

/** Kernel crypto modules behind each cipher, for "what to do" hints. */
const CRYPTO_MODULE: Record<KernelCipher, string> = {
  AES_GCM_128: 'gcm',
  AES_GCM_256: 'gcm',
  CHACHA20_POLY1305: 'chacha20poly1305',
  AES_CCM_128: 'ccm',
};

/** Sizes of the struct fields per cipher (linux/tls.h). */
const CIPHER_SIZES: Record<KernelCipher, { key: number; iv: number; salt: number }> = {
  AES_GCM_128: { key: 16, iv: 8, salt: 4 },
  AES_GCM_256: { key: 32, iv: 8, salt: 4 },
  CHACHA20_POLY1305: { key: 32, iv: 12, salt: 0 },
  AES_CCM_128: { key: 16, iv: 8, salt: 4 },
};

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

function configValue(text: string, name: string): 'y' | 'm' | 'n' | null {
  const m = new RegExp(`^${name}=([ym])$`, 'm').exec(text);
  if (m?.[1] === 'y' || m?.[1] === 'm') return m[1];
  if (new RegExp(`^# ${name} is not set$`, 'm').test(text)) return 'n';
  return null;
}

async function readKernelConfig(release: string): Promise<{ text: string; source: string } | null> {
  try {
    const gz = await readFile('/proc/config.gz');
    return { text: gunzipSync(gz).toString('utf8'), source: '/proc/config.gz' };
  } catch {
    // not built with IKCONFIG_PROC: try the files distributions ship
  }
  for (const path of [`/boot/config-${release}`, `/lib/modules/${release}/config`]) {
    const text = await readText(path);
    if (text !== null) return { text, source: path };
  }
  return null;
}

async function probeModule(release: string): Promise<KernelProbeDetails['module']> {
  const modulesDir = `/lib/modules/${release}`;
  const modulesDirVisible = existsSync(modulesDir);
  let builtin: boolean | null = null;
  let file: string | null = null;
  if (modulesDirVisible) {
    const builtinText = await readText(`${modulesDir}/modules.builtin`);
    if (builtinText !== null) builtin = /(^|\/)tls\.ko$/m.test(builtinText);
    // modules.dep names every module file: one read instead of a tree walk.
    const dep = await readText(`${modulesDir}/modules.dep`);
    const m = dep === null ? null : /^(\S*\/tls\.ko(?:\.\w+)?):/m.exec(dep);
    if (m?.[1]) file = `${modulesDir}/${m[1]}`;
    else {
      for (const ext of ['', '.xz', '.zst', '.gz']) {
        const p = `${modulesDir}/kernel/net/tls/tls.ko${ext}`;
        if (existsSync(p)) file = p;
      }
    }
  }
  const config = await readKernelConfig(release);
  return {
    loaded: existsSync('/sys/module/tls'),
    autoloadedByProbe: false,
    builtin,
    file,
    modulesDirVisible,
    config: config ? configValue(config.text, 'CONFIG_TLS') : null,
    configDevice: config ? configValue(config.text, 'CONFIG_TLS_DEVICE') : null,
    configSource: config?.source ?? null,
  };
}

/** Why TCP_ULP "tls" failed, from what the files say. */
function ulpVerdict(
  errno: string,
  mod: KernelProbeDetails['module'],
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
      detail: `this kernel (${osRelease()}) was built without CONFIG_TLS (${mod.configSource}: "# CONFIG_TLS is not set"); TCP_ULP "tls" gives ENOENT`,
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

interface Pair {
  client: net.Socket;
  server: net.Socket;
}

/** A connected loopback TCP pair through `listener` (accepts matched by port). */
function loopbackPair(listener: net.Server, accepted: Map<number, net.Socket>, waiters: Map<number, (s: net.Socket) => void>): Promise<Pair> {
  const addr = listener.address() as net.AddressInfo;
  return new Promise((resolve, reject) => {
    const client = net.connect({ port: addr.port, host: '127.0.0.1' });
    client.once('error', reject);
    client.once('connect', () => {
      const port = client.localPort ?? -1;
      const done = (server: net.Socket): void => {
        client.removeListener('error', reject);
        resolve({ client, server });
      };
      const ready = accepted.get(port);
      if (ready) {
        accepted.delete(port);
        done(ready);
      } else waiters.set(port, done);
    });
  });
}

function randomInfo(version: TlsVersion, cipher: KernelCipher): { version: TlsVersion; cipher: KernelCipher; key: Buffer; iv: Buffer; salt: Buffer; recSeq: bigint } {
  const s = CIPHER_SIZES[cipher];
  return { version, cipher, key: randomBytes(s.key), iv: randomBytes(s.iv), salt: randomBytes(s.salt), recSeq: 0n };
}

function errnoName(err: unknown): string {
  return classifyKtlsError(err, 'probe').errno;
}

interface KernelTrials {
  attach: string;
  ciphers: Map<string, { errno: string | null }>;
  rekey: { supported: boolean; errno: string | null } | null;
  options: Partial<Record<KtlsOption, { supported: boolean; errno: string | null }>>;
}

const comboKey = (v: TlsVersion, c: KernelCipher, d: KtlsDirection): string => `${v}/${c}/${d}`;

/** The real syscalls, on loopback pairs that are closed before returning. */
async function tryKernel(n: KtlsNative): Promise<KernelTrials> {
  const trials: KernelTrials = { attach: 'not_tried', ciphers: new Map(), rekey: null, options: {} };
  const accepted = new Map<number, net.Socket>();
  const waiters = new Map<number, (s: net.Socket) => void>();
  const sockets: net.Socket[] = [];
  const listener = net.createServer({ pauseOnConnect: true }, (s) => {
    sockets.push(s);
    s.on('error', () => undefined);
    const port = s.remotePort ?? -1;
    const w = waiters.get(port);
    if (w) {
      waiters.delete(port);
      w(s);
    } else accepted.set(port, s);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(0, '127.0.0.1', () => resolve());
    });
    const pair = async (): Promise<{ c: number; s: number }> => {
      const p = await loopbackPair(listener, accepted, waiters);
      sockets.push(p.client);
      p.client.on('error', () => undefined);
      p.client.pause();
      const c = socketFd(p.client);
      const s = socketFd(p.server);
      if (c === null || s === null) throw new Error('no fd on a loopback socket');
      return { c, s };
    };

    // The ULP first: without it nothing else can work.
    const first = await pair();
    try {
      n.attachUlp(first.c);
      trials.attach = 'ok';
    } catch (err) {
      trials.attach = errnoName(err);
      return trials;
    }
    let reuse: { c: number; s: number } | null = first;
    for (const version of TLS_VERSIONS) {
      for (const cipher of KERNEL_CIPHERS) {
        const fds = reuse ?? (await pair());
        const attached = reuse !== null;
        reuse = null;
        // TX on the client, RX on the server: one pair answers both directions.
        try {
          if (!attached) n.attachUlp(fds.c);
          n.setCryptoInfo(fds.c, 'tx', randomInfo(version, cipher));
          trials.ciphers.set(comboKey(version, cipher, 'tx'), { errno: null });
        } catch (err) {
          trials.ciphers.set(comboKey(version, cipher, 'tx'), { errno: errnoName(err) });
        }
        try {
          n.attachUlp(fds.s);
          n.setCryptoInfo(fds.s, 'rx', randomInfo(version, cipher));
          trials.ciphers.set(comboKey(version, cipher, 'rx'), { errno: null });
        } catch (err) {
          trials.ciphers.set(comboKey(version, cipher, 'rx'), { errno: errnoName(err) });
        }
        const txOk = trials.ciphers.get(comboKey(version, cipher, 'tx'))?.errno === null;
        const rxOk = trials.ciphers.get(comboKey(version, cipher, 'rx'))?.errno === null;
        if (txOk && trials.options.TLS_TX_ZEROCOPY_RO === undefined) {
          trials.options.TLS_TX_ZEROCOPY_RO = tryOption(n, fds.c, 'TLS_TX_ZEROCOPY_RO');
        }
        if (rxOk && version === 'TLSv1.3' && trials.options.TLS_RX_EXPECT_NO_PAD === undefined) {
          trials.options.TLS_RX_EXPECT_NO_PAD = tryOption(n, fds.s, 'TLS_RX_EXPECT_NO_PAD');
        }
        // Rekey: a second TLS 1.3 TX key on the same socket (>= 6.14; EBUSY before).
        if (txOk && version === 'TLSv1.3' && trials.rekey === null) {
          try {
            n.setCryptoInfo(fds.c, 'tx', randomInfo(version, cipher));
            trials.rekey = { supported: true, errno: null };
          } catch (err) {
            trials.rekey = { supported: false, errno: errnoName(err) };
          }
        }
      }
    }
    return trials;
  } finally {
    for (const s of sockets) s.destroy();
    for (const s of accepted.values()) s.destroy();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  }
}

function tryOption(n: KtlsNative, fd: number, opt: KtlsOption): { supported: boolean; errno: string | null } {
  try {
    n.setOption(fd, opt, true);
    return { supported: n.getOption(fd, opt), errno: null };
  } catch (err) {
    return { supported: false, errno: errnoName(err) };
  }
}

/** `ethtool -k` per interface: tls-hw-tx-offload / tls-hw-rx-offload. */
async function probeNicOffload(skip: boolean): Promise<KernelProbeDetails['nicOffload']> {
  if (skip) return { visible: false, note: 'not checked (skipped)', interfaces: [] };
  let names: string[];
  try {
    names = readdirSync('/sys/class/net').filter((n) => n !== 'lo');
  } catch {
    return { visible: false, note: 'not visible: /sys/class/net is not readable here', interfaces: [] };
  }
  const run = (name: string): Promise<{ out: string | null; missing: boolean }> =>
    new Promise((resolve) => {
      execFile('ethtool', ['-k', name], { timeout: 2000 }, (err, stdout) => {
        const code = (err as { code?: unknown } | null)?.code;
        resolve({ out: err ? null : stdout, missing: code === 'ENOENT' });
      });
    });
  const results = await Promise.all(names.map(async (name) => ({ name, ...(await run(name)) })));
  if (results.length > 0 && results.every((r) => r.missing)) {
    return {
      visible: false,
      note: 'not visible: `ethtool` is not installed here (TlsTxDevice/TlsRxDevice in /proc/net/tls_stat count offloaded connections)',
      interfaces: names.map((name) => ({ name, tx: null, rx: null })),
    };
  }
  const flag = (out: string | null, name: string): boolean | null => {
    const m = out === null ? null : new RegExp(`^${name}:\\s+(on|off)`, 'm').exec(out);
    return m ? m[1] === 'on' : null;
  };
  const interfaces = results.map((r) => ({ name: r.name, tx: flag(r.out, 'tls-hw-tx-offload'), rx: flag(r.out, 'tls-hw-rx-offload') }));
  const any = interfaces.some((i) => i.tx === true || i.rx === true);
  return {
    visible: true,
    note: any ? 'a NIC offers TLS offload (the sidecar uses software kTLS; the kernel may offload)' : 'no interface offers TLS offload',
    interfaces,
  };
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
  const emptyOptions = (reason: string): Record<KtlsOption, OptionProbe> => ({
    TLS_TX_ZEROCOPY_RO: { supported: false, errno: null, reason },
    TLS_RX_EXPECT_NO_PAD: { supported: false, errno: null, reason },
  });
  const details: KernelProbeDetails = {
    release,
    durationMs: 0,
    native: { available: false, reason: 'not checked', path: '' },
    ulp: { listed: null, availableUlps: null, attach: 'not_tried' },
    module: { loaded: false, autoloadedByProbe: false, builtin: null, file: null, modulesDirVisible: false, config: null, configDevice: null, configSource: null },
    ciphers: [],
    rekey: { supported: false, errno: null, reason: null, action: null },
    options: emptyOptions('not tried'),
    tlsStat: null,
    nicOffload: { visible: false, note: 'not checked', interfaces: [] },
    problems,
  };
  let reasonIfNot: KernelUnavailableReason | null = null;
  let reasonDetail: string | null = null;
  try {
    const loadedBefore = existsSync('/sys/module/tls');
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
    mod.loaded = existsSync('/sys/module/tls');
    mod.autoloadedByProbe = mod.loaded && !loadedBefore;
    const ulpText = await readText('/proc/sys/net/ipv4/tcp_available_ulp');
    if (ulpText !== null) {
      details.ulp.availableUlps = ulpText.trim().split(/\s+/).filter(Boolean);
      details.ulp.listed = details.ulp.availableUlps.includes('tls');
    }

    if (trials && trials.attach !== 'ok') {
      const v = ulpVerdict(trials.attach, mod, details.ulp.availableUlps);
      reasonIfNot = v.reason;
      reasonDetail = v.detail;
      problems.push({ what: 'kernel TLS (TCP_ULP "tls")', reason: v.detail, action: v.action });
    }

    // Every combination, with its own verdict (or the global one).
    for (const version of TLS_VERSIONS) {
      for (const cipher of KERNEL_CIPHERS) {
        for (const direction of KTLS_DIRECTIONS) {
          const t = trials?.attach === 'ok' ? trials.ciphers.get(comboKey(version, cipher, direction)) : undefined;
          if (t && t.errno === null) {
            details.ciphers.push({ version, cipher, direction, supported: true, errno: null, reason: null, action: null });
          } else if (t) {
            const v = cipherVerdict(t.errno ?? 'UNKNOWN', version, cipher, direction);
            details.ciphers.push({ version, cipher, direction, supported: false, errno: t.errno, reason: v.reason, action: v.action });
            problems.push({ what: `${version} ${cipher} ${direction.toUpperCase()}`, reason: v.reason, action: v.action });
          } else {
            details.ciphers.push({ version, cipher, direction, supported: false, errno: null, reason: reasonDetail, action: null });
          }
        }
      }
    }
    if (reasonIfNot === null && !details.ciphers.some((c) => c.supported)) {
      reasonIfNot = 'no_cipher_supported';
      reasonDetail = 'the kernel TLS ULP is there, but it refused every cipher';
    }

    if (trials?.rekey) {
      details.rekey = trials.rekey.supported
        ? { supported: true, errno: null, reason: null, action: null }
        : {
            supported: false,
            errno: trials.rekey.errno,
            reason:
              trials.rekey.errno === 'EBUSY'
                ? `this kernel (${release}) cannot take a second TLS 1.3 key (EBUSY): KeyUpdate/rekey needs Linux >= 6.14`
                : `a second TLS 1.3 key was refused with ${trials.rekey.errno}`,
            action: 'TLS 1.3 connections that see a KeyUpdate cannot stay in the kernel; use Linux >= 6.14 for rekey',
          };
    } else {
      details.rekey = {
        supported: false,
        errno: null,
        reason: reasonDetail ?? 'no TLS 1.3 cipher was accepted for TX, so rekey could not be tried',
        action: null,
      };
    }
    if (!details.rekey.supported && details.rekey.errno !== null) {
      problems.push({ what: 'TLS 1.3 rekey (KeyUpdate)', reason: details.rekey.reason ?? '', action: details.rekey.action ?? '' });
    }

    for (const opt of KTLS_OPTIONS) {
      const t = trials?.options[opt];
      if (t) {
        details.options[opt] = {
          supported: t.supported,
          errno: t.errno,
          reason: t.supported ? null : `the kernel refused ${opt}${t.errno ? ` (${t.errno})` : ''}`,
        };
      } else {
        details.options[opt] = { supported: false, errno: null, reason: reasonDetail ?? 'no socket to try it on' };
      }
    }

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
