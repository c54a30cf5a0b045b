// The config package's surface for the composition root (proxy/cli.ts).
export { loadConfig, reloadConfig } from './load.js';
export type { LoadedConfig } from './load.js';
export { watchConfigFile } from './watch.js';
