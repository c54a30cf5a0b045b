// Cipher-suite table: IANA code point → IANA name, OpenSSL name, and what the
// record layer needs to protect records with it. `kernelCipher` is the Linux
// TLS ULP cipher the suite maps to, or null when the kernel cannot hold it
// (CBC, CCM_8, ...): such suites stay on Node's TLSSocket. The non-AEAD rows
// exist only so logs and metrics can name what was negotiated.

import type { KernelCipher, TlsVersion } from '../../native/crypto-info.js';

export type HashName = 'sha256' | 'sha384';

export interface CipherSuite {
  /** IANA code point (RFC 8446 B.4, RFC 5288/5289/6655/7251/7905). */
  code: number;
  ianaName: string;
  /** Name as OpenSSL (and so `tlsSocket.getCipher().name`) reports it. */
  opensslName: string;
  version: TlsVersion;
  /** The kernel cipher this suite maps to; null = not offloadable. */
  kernelCipher: KernelCipher | null;
  /** PRF / HKDF hash of the suite. */
  hash: HashName;
}

/** Per-kernel-cipher record parameters (all use a 16-byte tag). */
export interface AeadParams {
  algorithm: 'aes-128-gcm' | 'aes-256-gcm' | 'aes-128-ccm' | 'chacha20-poly1305';
  keyLength: number;
  /** TLS 1.2 client/server_write_IV length from the key block (RFC 5288: 4, RFC 7905: 12). */
  tls12FixedIvLength: number;
  /** TLS 1.2 per-record explicit nonce length (GCM/CCM 8, ChaCha20 0). */
  tls12ExplicitNonceLength: number;
  /** TLS 1.3 hash of every suite using this cipher (KeyUpdate needs it). */
  tls13Hash: HashName;
}

export const AEAD_PARAMS: Readonly<Record<KernelCipher, AeadParams>> = Object.freeze({
  AES_GCM_128: { algorithm: 'aes-128-gcm', keyLength: 16, tls12FixedIvLength: 4, tls12ExplicitNonceLength: 8, tls13Hash: 'sha256' },
  AES_GCM_256: { algorithm: 'aes-256-gcm', keyLength: 32, tls12FixedIvLength: 4, tls12ExplicitNonceLength: 8, tls13Hash: 'sha384' },
  AES_CCM_128: { algorithm: 'aes-128-ccm', keyLength: 16, tls12FixedIvLength: 4, tls12ExplicitNonceLength: 8, tls13Hash: 'sha256' },
  CHACHA20_POLY1305: { algorithm: 'chacha20-poly1305', keyLength: 32, tls12FixedIvLength: 12, tls12ExplicitNonceLength: 0, tls13Hash: 'sha256' },
});

/** Every AEAD here takes a 12-byte nonce (RFC 8446 5.3, RFC 5288, RFC 7905). */
const NONCE_LENGTH = 12;

/**
 * Field sizes of the kernel's `struct tls12_crypto_info_*` (linux/tls.h) for a
 * cipher, from the table above: AES-GCM/CCM split the nonce into salt (the TLS
 * 1.2 fixed IV) and iv (the explicit nonce); ChaCha20 has no salt and keeps the
 * whole nonce in iv.
 */
export function kernelCryptoInfoSizes(cipher: KernelCipher): { key: number; iv: number; salt: number } {
  const p = AEAD_PARAMS[cipher];
  const salt = p.tls12ExplicitNonceLength === 0 ? 0 : p.tls12FixedIvLength;
  return { key: p.keyLength, iv: NONCE_LENGTH - salt, salt };
}

export const HASH_LENGTH: Readonly<Record<HashName, number>> = Object.freeze({ sha256: 32, sha384: 48 });

type Row = [code: number, iana: string, openssl: string, version: TlsVersion, kernel: KernelCipher | null, hash: HashName];

const ROWS: readonly Row[] = [
  // TLS 1.3: OpenSSL uses the IANA names.
  [0x1301, 'TLS_AES_128_GCM_SHA256', 'TLS_AES_128_GCM_SHA256', 'TLSv1.3', 'AES_GCM_128', 'sha256'],
  [0x1302, 'TLS_AES_256_GCM_SHA384', 'TLS_AES_256_GCM_SHA384', 'TLSv1.3', 'AES_GCM_256', 'sha384'],
  [0x1303, 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_CHACHA20_POLY1305_SHA256', 'TLSv1.3', 'CHACHA20_POLY1305', 'sha256'],
  // The kernel can hold AES-CCM on 1.3, but OpenSSL's own kTLS refuses it
  // ("broken on 5.x kernels"): whether to trust it is the decision's policy.
  [0x1304, 'TLS_AES_128_CCM_SHA256', 'TLS_AES_128_CCM_SHA256', 'TLSv1.3', 'AES_CCM_128', 'sha256'],
  [0x1305, 'TLS_AES_128_CCM_8_SHA256', 'TLS_AES_128_CCM_8_SHA256', 'TLSv1.3', null, 'sha256'],
  // TLS 1.2 AES-GCM
  [0x009c, 'TLS_RSA_WITH_AES_128_GCM_SHA256', 'AES128-GCM-SHA256', 'TLSv1.2', 'AES_GCM_128', 'sha256'],
  [0x009d, 'TLS_RSA_WITH_AES_256_GCM_SHA384', 'AES256-GCM-SHA384', 'TLSv1.2', 'AES_GCM_256', 'sha384'],
  [0x009e, 'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256', 'DHE-RSA-AES128-GCM-SHA256', 'TLSv1.2', 'AES_GCM_128', 'sha256'],
  [0x009f, 'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384', 'DHE-RSA-AES256-GCM-SHA384', 'TLSv1.2', 'AES_GCM_256', 'sha384'],
  [0xc02b, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', 'ECDHE-ECDSA-AES128-GCM-SHA256', 'TLSv1.2', 'AES_GCM_128', 'sha256'],
  [0xc02c, 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'TLSv1.2', 'AES_GCM_256', 'sha384'],
  [0xc02f, 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'TLSv1.2', 'AES_GCM_128', 'sha256'],
  [0xc030, 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', 'ECDHE-RSA-AES256-GCM-SHA384', 'TLSv1.2', 'AES_GCM_256', 'sha384'],
  // TLS 1.2 AES-CCM (16-byte tag only; CCM_8 is not offloadable)
  [0xc09c, 'TLS_RSA_WITH_AES_128_CCM', 'AES128-CCM', 'TLSv1.2', 'AES_CCM_128', 'sha256'],
  [0xc09e, 'TLS_DHE_RSA_WITH_AES_128_CCM', 'DHE-RSA-AES128-CCM', 'TLSv1.2', 'AES_CCM_128', 'sha256'],
  [0xc0ac, 'TLS_ECDHE_ECDSA_WITH_AES_128_CCM', 'ECDHE-ECDSA-AES128-CCM', 'TLSv1.2', 'AES_CCM_128', 'sha256'],
  [0xc0ae, 'TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8', 'ECDHE-ECDSA-AES128-CCM8', 'TLSv1.2', null, 'sha256'],
  // TLS 1.2 ChaCha20-Poly1305 (RFC 7905)
  [0xcca8, 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256', 'ECDHE-RSA-CHACHA20-POLY1305', 'TLSv1.2', 'CHACHA20_POLY1305', 'sha256'],
  [0xcca9, 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'TLSv1.2', 'CHACHA20_POLY1305', 'sha256'],
  [0xccaa, 'TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256', 'DHE-RSA-CHACHA20-POLY1305', 'TLSv1.2', 'CHACHA20_POLY1305', 'sha256'],
  // TLS 1.2 CBC: named for logs, never offloadable (MAC-then-encrypt is not in the kernel).
  [0xc027, 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256', 'ECDHE-RSA-AES128-SHA256', 'TLSv1.2', null, 'sha256'],
  [0xc028, 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384', 'ECDHE-RSA-AES256-SHA384', 'TLSv1.2', null, 'sha384'],
  [0xc023, 'TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256', 'ECDHE-ECDSA-AES128-SHA256', 'TLSv1.2', null, 'sha256'],
  [0xc024, 'TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384', 'ECDHE-ECDSA-AES256-SHA384', 'TLSv1.2', null, 'sha384'],
  [0xc013, 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA', 'ECDHE-RSA-AES128-SHA', 'TLSv1.2', null, 'sha256'],
  [0xc014, 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA', 'ECDHE-RSA-AES256-SHA', 'TLSv1.2', null, 'sha256'],
  [0x002f, 'TLS_RSA_WITH_AES_128_CBC_SHA', 'AES128-SHA', 'TLSv1.2', null, 'sha256'],
  [0x0035, 'TLS_RSA_WITH_AES_256_CBC_SHA', 'AES256-SHA', 'TLSv1.2', null, 'sha256'],
  [0x003c, 'TLS_RSA_WITH_AES_128_CBC_SHA256', 'AES128-SHA256', 'TLSv1.2', null, 'sha256'],
];

const BY_CODE: ReadonlyMap<number, CipherSuite> = new Map(
  ROWS.map(([code, ianaName, opensslName, version, kernelCipher, hash]) => [
    code,
    Object.freeze({ code, ianaName, opensslName, version, kernelCipher, hash }),
  ]),
);
const BY_NAME: ReadonlyMap<string, CipherSuite> = new Map(
  [...BY_CODE.values()].flatMap((s) => [[s.opensslName, s], [s.ianaName, s]] as const),
);

/** Suite by IANA code point, or undefined when the table does not know it. */
export function suiteByCode(code: number): CipherSuite | undefined {
  return BY_CODE.get(code);
}

/** Suite by OpenSSL or IANA name, or undefined. */
export function suiteByName(name: string): CipherSuite | undefined {
  return BY_NAME.get(name);
}

/** Every known suite (for docs, tests and `doctor`). */
export function allSuites(): CipherSuite[] {
  return [...BY_CODE.values()];
}
