// Whether this host's kernel has kTLS, for the host tests that drive the kTLS
// code paths against a kernel WITHOUT it (installs fail for real); shared so
// they all skip on the same condition.
import { readFileSync } from 'node:fs';
import { nativeStatus } from '../../native/index.js';

/** tcp_available_ulp lists "tls". */
export function hostHasKtls(): boolean {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').split(/\s+/).includes('tls');
  } catch {
    return false;
  }
}

/** tap `skip` for a test that needs the native addon and a kernel without kTLS (`why`: where a kTLS kernel is covered). */
export function skipUnlessKtlsLess(why: string): string | false {
  if (!nativeStatus().available) return 'native addon not built';
  return hostHasKtls() ? `this kernel has kTLS: ${why}` : false;
}
