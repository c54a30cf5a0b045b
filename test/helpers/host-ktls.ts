// Whether this host's kernel has kTLS, for the host tests that drive the kTLS
// code paths against a kernel WITHOUT it (installs fail for real); shared so
// they all skip on the same condition.
//
// Asked of the kernel, not of /proc/sys/net/ipv4/tcp_available_ulp: that file
// exists only in the host's network namespace, so in a container (every CI
// runner, `unshare -n`) it is missing whatever the kernel has.
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { release } from 'node:os';
import { gunzipSync } from 'node:zlib';
import { native, nativeStatus, socketFd } from '../../native/index.js';

/** The names in tcp_available_ulp; null where it is not visible (any network namespace but the host's). */
export function availableUlps(): string[] | null {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return null;
  }
}

/** CONFIG_TLS of the running kernel ('n' when "is not set"); null when no kernel config is visible. */
export function kernelConfigTls(): 'y' | 'm' | 'n' | null {
  let text: string | null = null;
  try {
    text = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
  } catch {
    for (const path of [`/boot/config-${release()}`, `/lib/modules/${release()}/config`]) {
      if (existsSync(path)) {
        text = readFileSync(path, 'utf8');
        break;
      }
    }
  }
  if (text === null) return null;
  const m = /^CONFIG_TLS=([ym])$/m.exec(text);
  if (m?.[1] === 'y' || m?.[1] === 'm') return m[1];
  return /^# CONFIG_TLS is not set$/m.test(text) ? 'n' : null;
}

/**
 * What the files say about the kernel's "tls" ULP, from sources read
 * independently of the product's probe: true when it is registered (listed in
 * tcp_available_ulp, /sys/module/tls, or CONFIG_TLS=y), false when the kernel
 * was built without it, null when only trying tells (a module not loaded yet,
 * which TCP_ULP autoloads with CAP_NET_ADMIN, or no config visible).
 */
export function tlsUlpFromFiles(): boolean | null {
  if (availableUlps()?.includes('tls') || existsSync('/sys/module/tls')) return true;
  const config = kernelConfigTls();
  if (config === 'y') return true;
  return config === 'n' ? false : null;
}

/**
 * TCP_ULP "tls" on a TCP socket: the kernel looks the ULP up (autoloading the
 * module where it may) before anything else and answers ENOENT only when there
 * is none. The socket is a listening one because Node creates that handle
 * synchronously (`listen(0)` without a host); a found ULP then refuses it for
 * its state (ENOTCONN/EINVAL), never with ENOENT.
 * Without the addon: /sys/module/tls (loaded or built in; not namespaced).
 */
export function hostHasKtls(): boolean {
  if (!nativeStatus().available) return existsSync('/sys/module/tls');
  const server = net.createServer();
  try {
    server.listen(0);
    const fd = socketFd(server);
    if (fd === null) throw new Error('host-ktls: the listening socket has no fd');
    try {
      native().attachUlp(fd);
      return true;
    } catch (err) {
      return (err as { code?: unknown }).code !== 'ENOENT';
    }
  } finally {
    server.close();
  }
}

/** tap `skip` for a test that needs the native addon and a kernel without kTLS (`why`: where a kTLS kernel is covered). */
export function skipUnlessKtlsLess(why: string): string | false {
  if (!nativeStatus().available) return 'native addon not built';
  return hostHasKtls() ? `this kernel has kTLS: ${why}` : false;
}
