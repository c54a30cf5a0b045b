// Coded errors. The `code` is stable API (tests, logs and operators match on
// it); the message is for humans and must never carry key material.

import { NATIVE_UNAVAILABLE_CODE } from '../native/index.js';

/** Every error code this project raises starts with this prefix. */
export type SidecarErrorCode = `ERR_KTLS_SIDECAR_${string}`;

/** Codes raised by the foundation modules; other modules may add their own with the same prefix. */
export const ErrorCodes = {
  /** Bad configuration: unknown key, wrong type, unreadable or mismatched certificate. */
  CONFIG: 'ERR_KTLS_SIDECAR_CONFIG',
  /** The admin server could not start (port in use, bad address). */
  ADMIN: 'ERR_KTLS_SIDECAR_ADMIN',
  /** The TLS handshake failed or timed out. */
  HANDSHAKE: 'ERR_KTLS_SIDECAR_HANDSHAKE',
  /** The bytes on the listener were not TLS (plain HTTP or garbage). */
  NOT_TLS: 'ERR_KTLS_SIDECAR_NOT_TLS',
  /** A configured limit was hit (connections, handshake buffer, header size). */
  LIMIT: 'ERR_KTLS_SIDECAR_LIMIT',
  /** The native kTLS addon is missing or could not be loaded. */
  NATIVE_UNAVAILABLE: NATIVE_UNAVAILABLE_CODE,
  /** Installing keys into the kernel failed. */
  KTLS_INSTALL: 'ERR_KTLS_SIDECAR_KTLS_INSTALL',
  /** A kTLS connection saw a control record it cannot handle (KeyUpdate limit, unexpected alert). */
  KTLS_CONTROL: 'ERR_KTLS_SIDECAR_KTLS_CONTROL',
} as const satisfies Record<string, SidecarErrorCode>;

/** Base class: an Error with a stable machine-readable `code`. */
export class SidecarError extends Error {
  readonly code: SidecarErrorCode;

  constructor(code: SidecarErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A configuration problem. `key` is the dotted config key (`listen.port`), the
 * flag (`--listen-port`), the env variable or `--config` that is wrong;
 * `reason` says what is wrong with it. The message is `<key>: <reason>`, one
 * line, so the CLI can print it as is and exit 2.
 */
export class ConfigError extends SidecarError {
  readonly key: string;
  readonly reason: string;

  constructor(key: string, reason: string, options?: { cause?: unknown }) {
    // One line: multi-line library messages are folded so the CLI prints one line.
    const oneLine = reason.replace(/\s*\n\s*/g, '; ');
    super(ErrorCodes.CONFIG, `${key}: ${oneLine}`, options);
    this.key = key;
    this.reason = oneLine;
  }
}

/** A short, safe description of any thrown value, for logs and one-line CLI output. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
