// The two layers that come as strings: CLI flags and KTLS_SIDECAR_* environment
// variables, each mapped to a dotted schema key. A name that is not a key is an
// error with a did-you-mean, never silently ignored.

import { ConfigError } from '../errors.js';
import { parseBoolean } from './formats.js';
import { ENV_PREFIX, schemaKeys, type KeyInfo } from './schema.js';

/** The env variable that may name the config file (`--config` wins over it). */
export const CONFIG_FILE_ENV = `${ENV_PREFIX}CONFIG`;

/**
 * Variables under the prefix that are not config keys and belong to other
 * parts (the native addon loader and its build script read these).
 */
const FOREIGN_ENV_PREFIXES = [`${ENV_PREFIX}NATIVE_`];

const KEYS: readonly KeyInfo[] = schemaKeys();
const BY_ENV = new Map(KEYS.map((k) => [k.env, k]));
const BY_FLAG = new Map(KEYS.map((k) => [k.flag, k]));

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] ?? 0;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] ?? 0;
      prev[j] = Math.min(up + 1, (prev[j - 1] ?? 0) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length] ?? 0;
}

/** ` (did you mean X?)` for the candidate closest to `name`, or '' when none is close. */
export function suggest(name: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(name.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 4)) ? ` (did you mean ${best}?)` : '';
}

export interface ParsedArgs {
  configFile: string | undefined;
  values: Map<string, string>;
}

/**
 * Flags: `--listen-port 9443`, `--listen-port=9443`; booleans also as
 * `--demo` / `--no-demo`. `--config FILE` names the config file. A leading
 * `serve` word is accepted (the CLI's default command).
 */
export function parseFlags(argv: readonly string[]): ParsedArgs {
  const out: ParsedArgs = { configFile: undefined, values: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] ?? '';
    if (i === 0 && token === 'serve') continue;
    if (!token.startsWith('--') || token === '--') {
      throw new ConfigError(token, 'unexpected argument (flags look like --listen-port 9443)');
    }
    const eq = token.indexOf('=');
    const flag = eq === -1 ? token : token.slice(0, eq);
    let value: string | undefined = eq === -1 ? undefined : token.slice(eq + 1);
    const takeNext = (): string => {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new ConfigError(flag, 'missing value');
      }
      i++;
      return next;
    };
    if (flag === '--config') {
      out.configFile = value ?? takeNext();
      continue;
    }
    const info = BY_FLAG.get(flag);
    if (!info && flag.startsWith('--no-') && value === undefined) {
      const positive = BY_FLAG.get('--' + flag.slice(5));
      if (positive?.leaf.format === 'strict-boolean') {
        out.values.set(positive.key, 'false');
        continue;
      }
    }
    if (!info) throw new ConfigError(flag, `unknown flag${suggest(flag, [...BY_FLAG.keys(), '--config'])}`);
    if (value === undefined) {
      const next = argv[i + 1];
      // A boolean flag alone means true; `--demo false` is also accepted (only
      // a boolean word is taken as its value, so `--demo serve` stays two things).
      if (info.leaf.format === 'strict-boolean') {
        if (next !== undefined && parseBoolean(next) !== undefined) {
          value = next;
          i++;
        } else value = 'true';
      } else value = takeNext();
    }
    out.values.set(info.key, value);
  }
  return out;
}

export function parseEnv(env: Readonly<Record<string, string | undefined>>): ParsedArgs {
  const out: ParsedArgs = { configFile: undefined, values: new Map() };
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    if (name === CONFIG_FILE_ENV) {
      if (value !== '') out.configFile = value;
      continue;
    }
    if (FOREIGN_ENV_PREFIXES.some((p) => name.startsWith(p))) continue;
    const info = BY_ENV.get(name);
    // A typo in an env name would otherwise be silently ignored.
    if (!info) throw new ConfigError(name, `unknown environment variable${suggest(name, [...BY_ENV.keys(), CONFIG_FILE_ENV])}`);
    out.values.set(info.key, value);
  }
  return out;
}
