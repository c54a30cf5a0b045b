#!/usr/bin/env -S node --max-semi-space-size=1 --expose-gc
// The flags above (also in `npm start`; the bench reads them from here) are
// about relayed bytes, which arrive as socket-read Buffers whose memory lives
// outside the JS heap and is freed at a scavenge: a 1 MiB young generation
// keeps scavenges frequent, and --expose-gc lets proxy/upstream/
// external-memory.ts ask for one every few MiB relayed. Without them the
// Buffers' external memory reached V8's limit first and started a full
// mark-compact every ~70 ms (measured, 1 MiB responses: 2.9 -> 1.5 CPU s/GiB).
// V8 reads them only at start-up (v8.setFlagsFromString() later does nothing).
// ktls-sidecar [serve] [flags]   run the sidecar (the default command)
// ktls-sidecar doctor [--json]   check this host for kTLS (proxy/doctor.ts)
// ktls-sidecar --version | --help
//
// Exit codes: 0 clean stop (SIGTERM/SIGINT after drain), 1 runtime failure
// (port in use, …; or more than 10 uncaught errors within 60 s, see
// proxy/crash-guard.ts), 2 configuration error (one line on stderr naming the key).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createKtlsFlag } from './ktls/flag.js';
import { registerProbeMetrics } from './admin/probe-metrics.js';
import { createMetrics, createPrimaryMetrics } from './admin/metrics.js';
import { type AdminServer, startAdminServer } from './admin/server.js';
import { type LoadedConfig, loadConfig, reloadConfig, watchConfigFile } from './config/index.js';
import { type DemoUpstream, startDemoUpstream } from './demo-upstream.js';
import { installCrashGuard } from './crash-guard.js';
import { ConfigError, describeError } from './errors.js';
import { type ListenerInfo, createLogger, logStartupSummary } from './log.js';
import { Sidecar } from './server.js';
import { runPrimary, workerCount } from './workers/primary.js';
import { attachToPrimary, podFlagAtStart, workerId } from './workers/worker.js';
import { type CertPair, generateSelfSigned, summarizeCert } from './tls/certs.js';
import { native, nativeStatus } from '../native/index.js';

const USAGE = `Usage:
  ktls-sidecar [serve] [--config FILE] [--<key> VALUE ...]   run the TLS-terminating sidecar
  ktls-sidecar doctor [--json]                               check this host for kernel TLS
  ktls-sidecar --version | --help

Quickstart:  ktls-sidecar --demo      (self-signed cert, built-in upstream; curl -k https://localhost:8443/)
Every config key is a flag: listen.port → --listen-port, tls.cert → --tls-cert, upstream.url → --upstream-url.
Environment: KTLS_SIDECAR_<KEY> (e.g. KTLS_SIDECAR_LISTEN_PORT). See docs/config.md.
`;

/** The package version, found by walking up from this file (works from proxy/ and dist/proxy/). */
export function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, 'package.json');
    try {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'ktls-sidecar' && pkg.version) return pkg.version;
    } catch {
      // not here: go up
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}

function writeErr(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function serve(argv: string[]): Promise<number> {
  let config: LoadedConfig;
  try {
    config = loadConfig({ argv, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      writeErr(`ktls-sidecar: config error: ${err.message}`);
      return 2;
    }
    throw err;
  }
  // workers: 1 is today's single process; more: this process supervises, its forks serve.
  const count = workerCount(config.workers);
  if (count > 1 && workerId() === undefined) return servePod(config, count);
  return serveProcess(config);
}

/** The primary of `workers: N`: no proxying; the admin server, the flag and the signals of the pod. */
function servePod(config: LoadedConfig, count: number): Promise<number> {
  const logger = createLogger({ level: config.log.level }).child({ role: 'primary' });
  const metrics = createMetrics({ version: packageVersion() });
  installCrashGuard({ logger, count: (kind) => metrics.internalError(kind) });
  const flag = createKtlsFlag({ enabled: config.ktls.enabled, logger, metrics });
  return runPrimary({
    config,
    count,
    logger,
    flag,
    registry: metrics.registry,
    observer: createPrimaryMetrics(metrics.registry),
    configReload: (result, trigger) => metrics.configReload(result, trigger),
    startAdmin: (pod, readiness) =>
      startAdminServer({ host: config.admin.host, port: config.admin.port, registry: metrics.registry, flag, readiness, logger, metrics, pod }),
  });
}

/** One process serving the listener: the whole sidecar (workers: 1), or one worker of the pod. */
async function serveProcess(config: LoadedConfig): Promise<number> {
  const version = packageVersion();
  const worker = workerId();
  const baseLogger = createLogger({ level: config.log.level });
  const logger = worker === undefined ? baseLogger : baseLogger.child({ worker });
  const metrics = createMetrics({ version, splicePipesIdle: () => (nativeStatus().available ? native().splicePipesIdle() : 0) });
  // From here on, one connection's failure (an error nobody caught) is logged
  // and counted instead of ending the process (serve only: doctor and tests
  // importing main() keep Node's default).
  installCrashGuard({ logger, count: (kind) => metrics.internalError(kind) });
  // A worker starts with the pod's flag (PUT /ktls may have changed it since the config was read).
  const enabled = worker === undefined ? config.ktls.enabled : podFlagAtStart(process.env, config.ktls.enabled);
  const flag = createKtlsFlag({ enabled, logger, metrics });

  let demoCert: CertPair | undefined;
  let demoUpstream: DemoUpstream | undefined;
  let upstreamUrl: string | undefined;
  try {
    if (config.demo && !config.tls.cert) demoCert = generateSelfSigned();
    if (config.demo && config.mode === 'http') {
      demoUpstream = await startDemoUpstream(config.upstream.url);
      upstreamUrl = demoUpstream.url;
    }
  } catch (err) {
    // A taken demo port is the operator's config (upstream.url): exit 2 like every config error.
    if (err instanceof ConfigError) {
      writeErr(`ktls-sidecar: config error: ${err.message}`);
      return 2;
    }
    logger.fatal({ err }, 'demo mode could not start');
    return 1;
  }

  let sidecar: Sidecar;
  try {
    sidecar = new Sidecar({
      config,
      logger,
      events: metrics,
      onKernelProbe: (probe) => registerProbeMetrics(metrics.registry, probe),
      demoCert,
      upstreamUrl,
      flag,
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      writeErr(`ktls-sidecar: config error: ${err.message}`);
      return 2;
    }
    throw err;
  }
  let admin: AdminServer | undefined;
  const listeners: ListenerInfo[] = [];
  try {
    const addr = await sidecar.listen();
    listeners.push({ name: 'tls', address: `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` });
    // A worker has no admin server: the primary serves the pod's.
    if (worker === undefined) {
      admin = await startAdminServer({
        host: config.admin.host,
        port: config.admin.port,
        registry: metrics.registry,
        flag,
        readiness: () => sidecar.readiness(),
        logger,
        metrics,
      });
      listeners.push({ name: 'admin', address: `${admin.host}:${admin.port}` });
    }
    if (demoUpstream) listeners.push({ name: 'demo-upstream', address: `127.0.0.1:${demoUpstream.port}` });
  } catch (err) {
    logger.fatal({ err }, 'cannot start');
    await sidecar.shutdown();
    await demoUpstream?.close();
    return 1;
  }
  const demoCertificate = demoCert ? summarizeCert(demoCert.cert).subject : undefined;
  // The kernel probe ran once in sidecar.listen(), before the first connection.
  if (worker === undefined) logStartupSummary(logger.child({ workers: 1 }), { config, listeners, kernel: sidecar.kernelSummary(), demoCertificate });

  let current = config;
  // A worker's config file is watched by the primary, which broadcasts the flag.
  const watcher = config.config.watch && worker === undefined
    ? watchConfigFile(config, {
        onChange: (next) => {
          flag.set(next.ktls.enabled, 'config_watch');
          metrics.configReload('success', 'config_watch');
        },
        onError: (err) => {
          metrics.configReload('failure', 'config_watch');
          logger.warn({ event: 'config_reload', trigger: 'config_watch', err }, 'config file change rejected; keeping the running config');
        },
      })
    : null;

  const reload = (): void => {
    const next = reloadConfig(current);
    if (next instanceof Error) {
      metrics.configReload('failure', 'sighup');
      logger.error({ event: 'config_reload', trigger: 'sighup', err: next }, 'SIGHUP: new config rejected; keeping the running config');
      return;
    }
    try {
      sidecar.applyConfig(next);
    } catch (err) {
      metrics.configReload('failure', 'sighup');
      logger.error({ event: 'config_reload', trigger: 'sighup', err }, 'SIGHUP: new config rejected; keeping the running config');
      return;
    }
    // In a pod of workers the primary says it once.
    if (worker === undefined && next.workers !== current.workers) {
      logger.warn({ event: 'config_reload', keys: ['workers'] }, 'workers changed: takes effect after a restart');
    }
    current = next;
    logger.level = next.log.level;
    flag.set(next.ktls.enabled, 'sighup');
    metrics.configReload('success', 'sighup');
    logger.info({ event: 'config_reload', trigger: 'sighup', result: 'success' }, 'SIGHUP: config reloaded');
  };

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'already draining');
        return;
      }
      stopping = true;
      logger.info({ signal, event: 'shutdown' }, `${signal}: stopping`);
      watcher?.close();
      void sidecar
        .shutdown()
        .then(() => admin?.close())
        .then(() => demoUpstream?.close())
        .then(() => {
          logger.info({ event: 'exit', code: 0 }, 'stopped');
          resolve(0);
        });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', reload);
    if (worker !== undefined) {
      attachToPrimary(
        { registry: metrics.registry, flag, readiness: () => sidecar.readiness(), reload, stop: () => stop('SIGTERM') },
        { listeners, kernel: sidecar.kernelSummary(), ...(demoCertificate ? { demoCertificate } : {}) },
      );
      logger.info({ event: 'worker_started', pid: process.pid, listeners }, `worker ${worker} serving`);
    }
  });
}

export async function main(argv: string[]): Promise<number> {
  const first = argv[0];
  if (first === '--version' || first === '-v' || first === 'version') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (first === '--help' || first === '-h' || first === 'help' || (first === 'serve' && argv[1] === '--help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  // Loaded lazily: the doctor pulls in the native probe, which serve does not need up front.
  if (first === 'doctor') return (await import('./doctor.js')).runDoctor(argv.slice(1));
  return serve(first === 'serve' ? argv.slice(1) : argv);
}

// Run when executed (bin or `node proxy/cli.ts`), not when imported by a test.
const invokedAs = process.argv[1] ? fs.realpathSync(process.argv[1]) : '';
if (invokedAs === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      writeErr(`ktls-sidecar: ${describeError(err)}`);
      process.exit(1);
    },
  );
}
