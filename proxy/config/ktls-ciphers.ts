// The cipher suites the kernel TLS ULP can hold, under both their IANA and
// OpenSSL names, so `ktls.ciphers` may be written either way and the decision
// can match Node's `getCipher().standardName` (IANA) without string juggling.

import type { KernelCipher } from '../tls/crypto-info.js';

export interface KtlsSuite {
  /** IANA name, as in `tlsSocket.getCipher().standardName`. */
  readonly iana: string;
  /** OpenSSL name, as in `tlsSocket.getCipher().name`. */
  readonly openssl: string;
  readonly version: 'TLSv1.2' | 'TLSv1.3';
  readonly kernelCipher: KernelCipher;
}

export const KTLS_SUITES: readonly KtlsSuite[] = [
  { iana: 'TLS_AES_128_GCM_SHA256', openssl: 'TLS_AES_128_GCM_SHA256', version: 'TLSv1.3', kernelCipher: 'AES_GCM_128' },
  { iana: 'TLS_AES_256_GCM_SHA384', openssl: 'TLS_AES_256_GCM_SHA384', version: 'TLSv1.3', kernelCipher: 'AES_GCM_256' },
  { iana: 'TLS_CHACHA20_POLY1305_SHA256', openssl: 'TLS_CHACHA20_POLY1305_SHA256', version: 'TLSv1.3', kernelCipher: 'CHACHA20_POLY1305' },
  { iana: 'TLS_AES_128_CCM_SHA256', openssl: 'TLS_AES_128_CCM_SHA256', version: 'TLSv1.3', kernelCipher: 'AES_CCM_128' },
  { iana: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', openssl: 'ECDHE-ECDSA-AES128-GCM-SHA256', version: 'TLSv1.2', kernelCipher: 'AES_GCM_128' },
  { iana: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', openssl: 'ECDHE-RSA-AES128-GCM-SHA256', version: 'TLSv1.2', kernelCipher: 'AES_GCM_128' },
  { iana: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', openssl: 'ECDHE-ECDSA-AES256-GCM-SHA384', version: 'TLSv1.2', kernelCipher: 'AES_GCM_256' },
  { iana: 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', openssl: 'ECDHE-RSA-AES256-GCM-SHA384', version: 'TLSv1.2', kernelCipher: 'AES_GCM_256' },
  { iana: 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', openssl: 'ECDHE-ECDSA-CHACHA20-POLY1305', version: 'TLSv1.2', kernelCipher: 'CHACHA20_POLY1305' },
  { iana: 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256', openssl: 'ECDHE-RSA-CHACHA20-POLY1305', version: 'TLSv1.2', kernelCipher: 'CHACHA20_POLY1305' },
  { iana: 'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256', openssl: 'DHE-RSA-AES128-GCM-SHA256', version: 'TLSv1.2', kernelCipher: 'AES_GCM_128' },
  { iana: 'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384', openssl: 'DHE-RSA-AES256-GCM-SHA384', version: 'TLSv1.2', kernelCipher: 'AES_GCM_256' },
  { iana: 'TLS_RSA_WITH_AES_128_GCM_SHA256', openssl: 'AES128-GCM-SHA256', version: 'TLSv1.2', kernelCipher: 'AES_GCM_128' },
  { iana: 'TLS_RSA_WITH_AES_256_GCM_SHA384', openssl: 'AES256-GCM-SHA384', version: 'TLSv1.2', kernelCipher: 'AES_GCM_256' },
  { iana: 'TLS_ECDHE_ECDSA_WITH_AES_128_CCM', openssl: 'ECDHE-ECDSA-AES128-CCM', version: 'TLSv1.2', kernelCipher: 'AES_CCM_128' },
];

/** Find a suite by IANA or OpenSSL name (case-insensitive). */
export function findKtlsSuite(name: string): KtlsSuite | undefined {
  const n = name.trim().toUpperCase();
  return KTLS_SUITES.find((s) => s.iana === n || s.openssl === n);
}
