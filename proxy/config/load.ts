// Configuration loading: defaults < --config FILE < KTLS_SIDECAR_* env < CLI
// flags. Nothing is read implicitly: argv, env and cwd are passed in (convict
// would otherwise read process.argv/env itself), so tests and reloads are
// deterministic. The result is a deep-frozen typed Config plus where each
// value came from.

import convict from 'convict';
import { extname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { parseEnv, parseFlags, suggest } from './args.js';
import { readConfiguredFile } from '../tls/certs.js';
import { checkValues, describeOrigin, type ConfiguredCertificate, type RawConfig } from './checks.js';
import { registerFormats } from './formats.js';
import { ENV_PREFIX, isSection, schema, schemaKeys, type Config } from './schema.js';

/** One layer that contributed values, in the order applied. */
export interface ConfigSource {
  readonly layer: 'default' | 'file' | 'env' | 'flag';
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
  /** The default and SNI certificates (subject, expiry…), checked at load, for the startup log. */
  readonly certificates: readonly ConfiguredCertificate[];
}

export interface LoadOptions {
  /** CLI arguments after the program (and optional `serve`) name; defaults to none. */
  readonly argv?: readonly string[];
  /** Environment; only KTLS_SIDECAR_* entries are read. Defaults to none. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Base for relative paths (config file, PEM files). Defaults to process.cwd(). */
  readonly cwd?: string;
}

const BY_KEY = new Map(schemaKeys().map((k) => [k.key, k]));

/** Inputs kept per loaded config so a reload applies the same env and flags over the re-read file. */
const reloadInputs = new WeakMap<LoadedConfig, Required<LoadOptions>>();

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

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
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

  const { ciphers, certificates } = checkValues(raw, origins);

  const loaded: LoadedConfig = {
    ...raw,
    ktls: { ...raw.ktls, ciphers },
    sources,
    file,
    certificates,
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
