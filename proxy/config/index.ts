// The config package's public surface.
export { loadConfig, reloadConfig } from './load.js';
export { parseFlags, CONFIG_FILE_ENV } from './args.js';
export type { LoadedConfig, LoadOptions, ConfigSource, ConfigLayer } from './load.js';
export { schema, schemaKeys, schemaDefaults, envName, flagName, ENV_PREFIX, LOG_LEVELS } from './schema.js';
export type { Config, KtlsCipherRule, SniCertificate, ProxyMode, LogLevel, KeyInfo } from './schema.js';
export { parseDuration, parseSize, parseHostPort, parseBoolean } from './formats.js';
export type { HostPort } from './formats.js';
export type { CertificateSummary } from './certs.js';
export { watchConfigFile } from './watch.js';
export type { ConfigWatcher, WatchOptions } from './watch.js';
