// Configuration loading: defaults < --config FILE < KTLS_SIDECAR_* env < CLI
// flags. Nothing is read implicitly: argv, env and cwd are passed in (convict
// would otherwise read process.argv/env itself), so tests and reloads are
// deterministic. The result is a deep-frozen typed Config plus where each
// value came from.

import convict from 'convict';
import { extname, isAbsolute, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { checkCaBundle, checkKeyPair, readConfiguredFile, type CertificateSummary } from './certs.js';
import { parseBoolean, registerFormats } from './formats.js';
import type { KtlsDirectionSetting } from '../vocabulary.js';
import { parseCipherPolicy } from './ktls-ciphers.js';
import {
  ENV_PREFIX,
  isSection,
  schema,
  schemaKeys,
  type Config,
  type KeyInfo,
  type KtlsCipherRule,
  type SniCertificate,
} from './schema.js';

export type ConfigLayer = 'default' | 'file' | 'env' | 'flag';

/** One layer that contributed values, in the order applied. */
export interface ConfigSource {
  readonly layer: ConfigLayer;
  /** The config file (layer `file`). */
  readonly path?: string;
  /** Dotted keys this layer set (for `default`: empty, it sets everything). */
  readonly keys: readonly string[];
}

export interface LoadedConfig extends Config {
  /** The layers applied, lowest precedence first. */
  readonly sources: readonly ConfigSource[];
  /** Absolute path of the --config file, or null; SIGHUP and the watch re-read it. */
  readonly file: string | null;
  /** The default and SNI certificates (subject, expiry…), for the startup log and expiry metric. */
  readonly certificates: readonly CertificateSummary[];
  /** When this config was loaded (ms since the epoch). */
  readonly loadedAt: number;
}

export interface LoadOptions {
  /** CLI arguments after the program (and optional `serve`) name; defaults to none. */
  readonly argv?: readonly string[];
  /** Environment; only KTLS_SIDECAR_* entries are read. Defaults to none. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Base for relative paths (config file, PEM files). Defaults to process.cwd(). */
  readonly cwd?: string;
}

/** The env variable that may name the config file (`--config` wins over it). */
export const CONFIG_FILE_ENV = `${ENV_PREFIX}CONFIG`;

/**
 * Variables under the prefix that are not config keys and belong to other
 * parts (the native addon loader and its build script read these).
 */
const FOREIGN_ENV_PREFIXES = [`${ENV_PREFIX}NATIVE_`];

const KEYS: readonly KeyInfo[] = schemaKeys();
const BY_KEY = new Map(KEYS.map((k) => [k.key, k]));
const BY_ENV = new Map(KEYS.map((k) => [k.env, k]));
const BY_FLAG = new Map(KEYS.map((k) => [k.flag, k]));

/** Inputs kept per loaded config so a reload applies the same env and flags over the re-read file. */
const reloadInputs = new WeakMap<LoadedConfig, Required<LoadOptions>>();

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

function suggest(name: string, candidates: Iterable<string>): string {
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

function isBooleanKey(info: KeyInfo): boolean {
  return info.leaf.format === 'strict-boolean';
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
      if (positive && isBooleanKey(positive)) {
        out.values.set(positive.key, 'false');
        continue;
      }
    }
    if (!info) throw new ConfigError(flag, `unknown flag${suggest(flag, [...BY_FLAG.keys(), '--config'])}`);
    if (value === undefined) {
      const next = argv[i + 1];
      // A boolean flag alone means true; `--demo false` is also accepted (only
      // a boolean word is taken as its value, so `--demo serve` stays two things).
      if (isBooleanKey(info)) {
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

function parseEnv(env: Readonly<Record<string, string | undefined>>): ParsedArgs {
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

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reject keys the schema does not have (with a suggestion) and scalars where a section belongs; drop nulls. */
function checkFileKeys(obj: Record<string, unknown>, path: string[], keysSet: string[]): void {
  for (const [name, value] of Object.entries(obj)) {
    const here = [...path, name];
    const dotted = here.join('.');
    if (isSection(here)) {
      if (value === null) {
        delete obj[name];
        continue;
      }
      if (!isPlainObject(value)) throw new ConfigError(dotted, 'must be a section (a mapping of keys), not a single value');
      checkFileKeys(value, here, keysSet);
      continue;
    }
    if (!BY_KEY.has(dotted)) {
      throw new ConfigError(dotted, `unknown key${suggest(dotted, BY_KEY.keys())}`);
    }
    // `cert:` with nothing after it in YAML is null: treat it as "not set here".
    if (value === null) {
      delete obj[name];
      continue;
    }
    keysSet.push(dotted);
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  const ext = extname(path).toLowerCase();
  if (!['.json', '.yaml', '.yml'].includes(ext)) {
    throw new ConfigError('--config', `${path}: unsupported file type "${ext || '(none)'}" (use .json, .yaml or .yml)`);
  }
  const text = readConfiguredFile('--config', path).toString('utf8');
  let parsed: unknown;
  try {
    parsed = ext === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError('--config', `${path} is not valid ${ext === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`, { cause: err });
  }
  if (parsed === null || parsed === undefined) return {}; // an empty file is an empty layer
  if (!isPlainObject(parsed)) throw new ConfigError('--config', `${path} must hold a mapping of keys at the top level`);
  return parsed;
}

type ConvictInstance = convict.Config<Record<string, unknown>>;

function describeOrigin(key: string, origins: Map<string, string>): string {
  const o = origins.get(key);
  return o ? ` (set by ${o})` : '';
}

/** Turn convict's validation text (`key: reason: value was X`, several lines) into one ConfigError. */
function convictError(err: unknown, origins: Map<string, string>): ConfigError {
  const text = err instanceof Error ? err.message : String(err);
  const first = text.split('\n').find((l) => l.trim() !== '') ?? text;
  const undeclared = /configuration param '([^']+)' not declared/.exec(first);
  if (undeclared?.[1]) return new ConfigError(undeclared[1], 'unknown key', { cause: err });
  const m = /^([A-Za-z0-9_.]+): (.*)$/.exec(first);
  if (m?.[1] && m[2] !== undefined) return new ConfigError(m[1], m[2] + describeOrigin(m[1], origins), { cause: err });
  return new ConfigError('config', first, { cause: err });
}

function resolvePath(cwd: string, p: string): string {
  return p === '' ? '' : isAbsolute(p) ? p : resolve(cwd, p);
}

const SERVERNAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function checkCipherLists(ciphers: string, ciphersuites: string): void {
  try {
    createSecureContext({ ciphers });
  } catch {
    throw new ConfigError('tls.ciphers', `"${ciphers}" matches no cipher OpenSSL knows`);
  }
  for (const suite of ciphersuites.split(':')) {
    if (!suite.startsWith('TLS_')) throw new ConfigError('tls.ciphersuites', `"${suite}" is not a TLS 1.3 suite name (TLS_...)`);
    try {
      createSecureContext({ ciphers: suite });
    } catch {
      throw new ConfigError('tls.ciphersuites', `"${suite}" is not a TLS 1.3 suite OpenSSL knows`);
    }
  }
}

/** Resolve `ktls.ciphers` with the kTLS policy parser (it throws ConfigError('ktls.ciphers', …)). */
function cipherRules(entries: readonly string[], direction: KtlsDirectionSetting): KtlsCipherRule[] {
  return parseCipherPolicy(entries).entries.map((e) => ({
    iana: e.suite.iana,
    openssl: e.suite.openssl,
    version: e.suite.version,
    kernelCipher: e.suite.kernelCipher,
    direction: e.direction ?? direction,
  }));
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

interface RawConfig {
  listen: { host: string; port: number };
  mode: Config['mode'];
  upstream: Config['upstream'];
  demo: boolean;
  tls: Omit<Config['tls'], 'sni'> & { sni: SniCertificate[] };
  admin: Config['admin'];
  log: Config['log'];
  shutdown: Config['shutdown'];
  timeouts: Config['timeouts'];
  limits: Config['limits'];
  ktls: Omit<Config['ktls'], 'ciphers'> & { ciphers: string[] };
  config: Config['config'];
}

/** Build the config from the given inputs. Throws ConfigError. */
function build(inputs: Required<LoadOptions>): LoadedConfig {
  registerFormats();
  const { argv, env, cwd } = inputs;
  const flags = parseFlags(argv);
  const envVals = parseEnv(env);

  // Explicit empty env/args: convict must not fall back to process.env/argv.
  const c: ConvictInstance = convict<Record<string, unknown>>(schema, { env: {}, args: [] });
  const sources: ConfigSource[] = [{ layer: 'default', keys: [] }];
  const origins = new Map<string, string>();

  const fileArg = flags.configFile ?? envVals.configFile;
  const file = fileArg === undefined ? null : resolvePath(cwd, fileArg);
  if (file !== null) {
    const obj = readConfigFile(file);
    const keys: string[] = [];
    checkFileKeys(obj, [], keys);
    c.load(obj);
    for (const k of keys) origins.set(k, file);
    sources.push({ layer: 'file', path: file, keys });
  }
  for (const [layer, parsed] of [['env', envVals], ['flag', flags]] as const) {
    if (parsed.values.size === 0) continue;
    for (const [key, value] of parsed.values) {
      c.set(key, value);
      const info = BY_KEY.get(key);
      origins.set(key, layer === 'env' ? (info?.env ?? key) : (info?.flag ?? key));
    }
    sources.push({ layer, keys: [...parsed.values.keys()] });
  }

  try {
    c.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    throw convictError(err, origins);
  }
  const raw = c.getProperties() as unknown as RawConfig;

  // Paths are relative to cwd (the working directory of the process or the test).
  raw.tls = {
    ...raw.tls,
    cert: resolvePath(cwd, raw.tls.cert),
    key: resolvePath(cwd, raw.tls.key),
    clientCA: resolvePath(cwd, raw.tls.clientCA),
    sni: raw.tls.sni.map((s) => ({ servername: s.servername.toLowerCase(), cert: resolvePath(cwd, s.cert), key: resolvePath(cwd, s.key) })),
  };

  if (raw.limits.maxConnections < 1) throw new ConfigError('limits.maxConnections', 'must be at least 1' + describeOrigin('limits.maxConnections', origins));
  if (raw.upstream.maxSockets < 1) throw new ConfigError('upstream.maxSockets', 'must be at least 1' + describeOrigin('upstream.maxSockets', origins));
  if (raw.limits.maxConcurrentStreams < 1) {
    throw new ConfigError('limits.maxConcurrentStreams', 'must be at least 1' + describeOrigin('limits.maxConcurrentStreams', origins));
  }
  // Same port on overlapping addresses: the second listen() would fail at
  // runtime with EADDRINUSE; say which keys collide instead.
  const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::';
  if (
    raw.listen.port !== 0 &&
    raw.listen.port === raw.admin.port &&
    (raw.listen.host === raw.admin.host || wildcard(raw.listen.host) || wildcard(raw.admin.host))
  ) {
    throw new ConfigError('admin.port', `${raw.admin.port} is also listen.port; the admin server needs its own port`);
  }
  checkCipherLists(raw.tls.ciphers, raw.tls.ciphersuites);
  const ciphers = cipherRules(raw.ktls.ciphers, raw.ktls.direction);

  const certificates: CertificateSummary[] = [];
  if (raw.tls.cert === '' || raw.tls.key === '') {
    if (raw.tls.cert !== '' || raw.tls.key !== '') {
      const missing = raw.tls.cert === '' ? 'tls.cert' : 'tls.key';
      throw new ConfigError(missing, `required when ${missing === 'tls.cert' ? 'tls.key' : 'tls.cert'} is set`);
    }
    if (!raw.demo) throw new ConfigError('tls.cert', 'required (a PEM certificate file) unless --demo is set');
  } else {
    certificates.push(checkKeyPair('*', 'tls.cert', raw.tls.cert, 'tls.key', raw.tls.key));
  }
  const seen = new Set<string>();
  raw.tls.sni.forEach((s, i) => {
    if (!SERVERNAME.test(s.servername)) throw new ConfigError(`tls.sni[${i}].servername`, `"${s.servername}" is not a host name`);
    if (seen.has(s.servername)) throw new ConfigError(`tls.sni[${i}].servername`, `"${s.servername}" is listed twice`);
    seen.add(s.servername);
    certificates.push(checkKeyPair(s.servername, `tls.sni[${i}].cert`, s.cert, `tls.sni[${i}].key`, s.key));
  });
  if (raw.tls.clientCA !== '') checkCaBundle('tls.clientCA', raw.tls.clientCA);

  const loaded: LoadedConfig = {
    ...raw,
    ktls: { ...raw.ktls, ciphers },
    sources,
    file,
    certificates,
    loadedAt: Date.now(),
  };
  deepFreeze(loaded);
  reloadInputs.set(loaded, inputs);
  return loaded;
}

/**
 * Load the configuration. Throws ConfigError (one line: `<key>: <reason>`) on
 * an unknown key, flag or KTLS_SIDECAR_* variable, a wrong type, an unreadable
 * file, or a certificate/key that does not match.
 */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env: Record<string, string> = {};
  // Keep only our variables: the reload inputs must not hold unrelated (possibly secret) env.
  for (const [k, v] of Object.entries(options.env ?? {})) if (k.startsWith(ENV_PREFIX) && v !== undefined) env[k] = v;
  return build({ argv: [...(options.argv ?? [])], env, cwd: options.cwd ?? process.cwd() });
}

/**
 * Re-read the config file of `previous` and re-apply the same env and flags
 * over it (SIGHUP, config watch). Returns the new config, or the ConfigError
 * (the caller keeps `previous`).
 */
export function reloadConfig(previous: LoadedConfig): LoadedConfig | ConfigError {
  const inputs = reloadInputs.get(previous);
  if (!inputs) return new ConfigError('config', 'this config was not produced by loadConfig()');
  try {
    return build(inputs);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    return new ConfigError('config', (err as Error).message, { cause: err });
  }
}
