// Value formats for the config schema. convict 6 dropped its `url` and
// `duration` formats, and its own coercions are lax (`parseInt('9443abc')` is
// 9443, any string but "false" is true), so every format here parses strictly:
// a string that does not parse is left as is and the validator rejects it
// with a reason that names what was expected.

import convict from 'convict';

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `30s`, `500ms`, `2m`, `1h`, `1.5s`, a bare number of ms (`1500`) or a number → milliseconds. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!m) return undefined;
  const unit = DURATION_UNITS_MS[m[2] ?? 'ms'] ?? 1;
  return Math.round(Number(m[1]) * unit);
}

const SIZE_UNITS: Record<string, number> = {
  b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3,
};

/** `16384`, `16KiB`, `1MiB`, `1MB` or a number → bytes (integer). */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+)\s*([a-z]+)?\s*$/i.exec(value);
  if (!m) return undefined;
  const unit = SIZE_UNITS[(m[2] ?? 'b').toLowerCase()];
  if (unit === undefined) return undefined;
  const n = Number(m[1]) * unit;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** `host:port` or `[ipv6]:port` with a port in 1..65535. */
export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(value.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2] ?? '', port };
}

/** Strict boolean from env/flag text; undefined if it is not one of the accepted spellings. */
export function parseBoolean(value: unknown): boolean | undefined {
  if (typeof value === 'boolean') return value;
  if (typeof value !== 'string') return undefined;
  const v = value.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  return undefined;
}

/** Env/flag text for a list: comma separated (`:` is taken by the per-cipher direction). */
function splitList(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** Env/flag text of a whole number → the number; anything else is left for the validator to reject. */
const wholeNumber = (v: string): number | string => (/^\s*\d+\s*$/.test(v) ? Number(v) : v);

let registered = false;

/** Register the formats with convict (idempotent; convict's format table is process-global). */
export function registerFormats(): void {
  if (registered) return;
  registered = true;
  convict.addFormats({
    url: {
      validate(v: unknown) {
        if (typeof v !== 'string') throw new Error('must be a URL string');
        let u: URL;
        try {
          u = new URL(v);
        } catch {
          throw new Error('must be an absolute URL like http://127.0.0.1:8080');
        }
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('must be an http:// or https:// URL');
      },
    },
    'host-port': {
      validate(v: unknown) {
        if (typeof v !== 'string' || !parseHostPort(v)) throw new Error('must be host:port (or [ipv6]:port) with a port 1-65535');
      },
    },
    duration: {
      validate(v: unknown) {
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
          throw new Error('must be a duration: 30s, 500ms, 2m, 1h or a number of milliseconds');
        }
      },
      coerce(v: string) {
        return parseDuration(v) ?? v;
      },
    },
    size: {
      validate(v: unknown) {
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
          throw new Error('must be a positive size: a number of bytes or 16KiB, 1MiB');
        }
      },
      coerce(v: string) {
        return parseSize(v) ?? v;
      },
    },
    'strict-boolean': {
      validate(v: unknown) {
        if (typeof v !== 'boolean') throw new Error('must be a boolean (true/false)');
      },
      coerce(v: string) {
        return parseBoolean(v) ?? v;
      },
    },
    'tcp-port': {
      validate(v: unknown) {
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
          throw new Error('must be a port number 0-65535');
        }
      },
      coerce: wholeNumber,
    },
    count: {
      validate(v: unknown) {
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error('must be a whole number >= 0');
      },
      coerce: wholeNumber,
    },
    ratio: {
      validate(v: unknown) {
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1) throw new Error('must be a number from 0 to 1');
      },
      coerce(v: string) {
        return /^\s*\d*\.?\d+\s*$/.test(v) ? Number(v) : v;
      },
    },
    'pem-path': {
      // Existence and content are checked after validation (see certs.ts), with
      // the file named in the error; here only the type.
      validate(v: unknown) {
        if (typeof v !== 'string') throw new Error('must be a file path (string)');
      },
    },
    'nonempty-string': {
      validate(v: unknown) {
        if (typeof v !== 'string' || v.trim() === '') throw new Error('must be a non-empty string');
      },
    },
    'string': {
      validate(v: unknown) {
        if (typeof v !== 'string') throw new Error('must be a string');
      },
    },
    'ktls-cipher-list': {
      validate(v: unknown) {
        // Names and directions are checked after validation by the kTLS policy
        // parser (called from checks.ts), which owns the suite table.
        if (!Array.isArray(v) || !v.every((e) => typeof e === 'string')) throw new Error('must be a list of cipher suite names');
      },
      coerce(v: string) {
        return splitList(v);
      },
    },
    'sni-list': {
      validate(v: unknown) {
        if (!Array.isArray(v)) throw new Error('must be a list of {servername, cert, key}');
        v.forEach((e: unknown, i) => {
          if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new Error(`[${i}] must be {servername, cert, key}`);
          const rec = e as Record<string, unknown>;
          for (const k of Object.keys(rec)) {
            if (!['servername', 'cert', 'key'].includes(k)) throw new Error(`[${i}].${k} is not a known field (servername, cert, key)`);
          }
          for (const k of ['servername', 'cert', 'key']) {
            if (typeof rec[k] !== 'string' || rec[k].trim() === '') throw new Error(`[${i}].${k} must be a non-empty string`);
          }
        });
      },
      coerce(v: string) {
        // Env/flag form is JSON: [{"servername":"a.example","cert":"/a.pem","key":"/a.key"}]
        try {
          return JSON.parse(v) as unknown;
        } catch {
          return v;
        }
      },
    },
  });
}
