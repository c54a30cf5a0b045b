// What the files say about kernel TLS on this host: where the tls module stands
// (/sys/module/tls, modules.dep/builtin, the kernel config), which TCP ULPs are
// listed, and whether a NIC offers TLS offload. Hints for the verdicts only: the
// answer itself comes from trying (probe-trials.ts). Nothing here throws.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

/** A kernel config option: 'y', 'm', 'n' (not set), or null when no config is visible. */
export type KernelConfigValue = 'y' | 'm' | 'n' | null;

export interface ModuleFacts {
  /** /sys/module/tls exists (loaded, or built in), after the probe. */
  loaded: boolean;
  /** The probe's own TCP_ULP "tls" loaded the module (root/CAP_NET_ADMIN only). */
  autoloadedByProbe: boolean;
  /** modules.builtin lists tls.ko; null when /lib/modules/<release> is not visible. */
  builtin: boolean | null;
  /** Path of tls.ko* under /lib/modules/<release>; null when not found or not visible. */
  file: string | null;
  modulesDirVisible: boolean;
  /** CONFIG_TLS. */
  config: KernelConfigValue;
  /** CONFIG_TLS_DEVICE (NIC offload support). */
  configDevice: KernelConfigValue;
  configSource: string | null;
}

export interface NicOffloadFacts {
  visible: boolean;
  note: string;
  interfaces: Array<{ name: string; tx: boolean | null; rx: boolean | null }>;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

/** /sys/module/tls exists: the module is loaded or built in. */
export function tlsModuleLoaded(): boolean {
  return existsSync('/sys/module/tls');
}

/**
 * Why tcp_available_ulp may be missing: the kernel registers it for the initial
 * network namespace only, so a pod (or any container without host networking)
 * never sees it. The probe's TCP_ULP trial answers in every namespace.
 */
export const ULP_LIST_HIDDEN = 'the kernel shows it only in the host network namespace; the TCP_ULP trial answers instead';

/** The names in tcp_available_ulp; null when the file is not visible (ULP_LIST_HIDDEN). */
export async function readAvailableUlps(): Promise<string[] | null> {
  const text = await readText('/proc/sys/net/ipv4/tcp_available_ulp');
  return text === null ? null : text.trim().split(/\s+/).filter(Boolean);
}

function configValue(text: string, name: string): KernelConfigValue {
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

/** Where the tls module stands for kernel `release`, from /lib/modules and the kernel config. */
export async function probeModule(release: string): Promise<ModuleFacts> {
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
    loaded: tlsModuleLoaded(),
    autoloadedByProbe: false,
    builtin,
    file,
    modulesDirVisible,
    config: config ? configValue(config.text, 'CONFIG_TLS') : null,
    configDevice: config ? configValue(config.text, 'CONFIG_TLS_DEVICE') : null,
    configSource: config?.source ?? null,
  };
}

/** `ethtool -k` per interface: tls-hw-tx-offload / tls-hw-rx-offload. */
export async function probeNicOffload(skip: boolean): Promise<NicOffloadFacts> {
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
