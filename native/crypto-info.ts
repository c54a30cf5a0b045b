// The state one direction of a TLS connection needs in the kernel: exactly the
// fields of `struct tls12_crypto_info_*` in include/uapi/linux/tls.h, in
// TLS terms. The handshake engine produces it; the native shim turns it into
// the kernel struct (built from the real header, so the layout cannot drift)
// and zeroes the key buffers once setsockopt() has returned.

/** Ciphers the kernel's TLS ULP can hold (names follow TLS_CIPHER_* in linux/tls.h). */
export const KERNEL_CIPHERS = ['AES_GCM_128', 'AES_GCM_256', 'CHACHA20_POLY1305', 'AES_CCM_128'] as const;
export type KernelCipher = (typeof KERNEL_CIPHERS)[number];

/** The TLS versions the kernel's TLS ULP can hold (and the only ones the sidecar negotiates). */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/** One direction of a connection's record layer: `tx` = to the client, `rx` = from it. */
export const KTLS_DIRECTIONS = ['tx', 'rx'] as const;
export type KtlsDirection = (typeof KTLS_DIRECTIONS)[number];

export interface CryptoInfo {
  version: TlsVersion;
  cipher: KernelCipher;
  /** Traffic key: 16 or 32 bytes. */
  key: Buffer;
  /**
   * The struct's `iv` field. AES-GCM/CCM: 8 bytes — TLS 1.3: iv[4..12] of the
   * 12-byte write IV; TLS 1.2: the next explicit nonce (TX) as OpenSSL left it.
   * ChaCha20-Poly1305: the whole 12-byte write IV.
   */
  iv: Buffer;
  /** The struct's `salt` field: AES-GCM/CCM 4 bytes (write IV[0..4]); ChaCha20: empty. */
  salt: Buffer;
  /** Sequence number of the next record in this direction. */
  recSeq: bigint;
}

/** Overwrite every secret byte of a CryptoInfo (after install, or when it is dropped). */
export function wipeCryptoInfo(info: CryptoInfo): void {
  info.key.fill(0);
  info.iv.fill(0);
  info.salt.fill(0);
}
