#!/usr/bin/env node
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
import { createMetrics } from './admin/metrics.js';
import { type AdminServer, startAdminServer } from './admin/server.js';
import { type LoadedConfig, loadConfig, reloadConfig, watchConfigFile } from './config/index.js';
import { type DemoUpstream, startDemoUpstream } from './demo-upstream.js';
import { installCrashGuard } from './crash-guard.js';
import { ConfigError, describeError } from './errors.js';
import { type ListenerInfo, createLogger, logStartupSummary } from './log.js';
import { Sidecar } from './server.js';
import { type CertPair, generateSelfSigned, summarizeCert } from './tls/certs.js';

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
  const version = packageVersion();
  const logger = createLogger({ level: config.log.level });
  const metrics = createMetrics({ version });
  // From here on, one connection's failure (an error nobody caught) is logged
  // and counted instead of ending the process (serve only: doctor and tests
  // importing main() keep Node's default).
  installCrashGuard({ logger, count: (kind) => metrics.internalError(kind) });
  const flag = createKtlsFlag({ enabled: config.ktls.enabled, logger, metrics });

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
    logger.fatal({ error: describeError(err) }, 'demo mode could not start');
    return 1;
  }

  let sidecar: Sidecar;
  try {
    sidecar = new Sidecar({
      config,
      logger,
      events: metrics,
      onKernelProbe: (probe, kernelAvailable) => registerProbeMetrics(metrics.registry, probe, { kernelAvailable }),
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
  let admin: AdminServer;
  const listeners: ListenerInfo[] = [];
  try {
    const addr = await sidecar.listen();
    listeners.push({ name: 'tls', address: `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` });
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
    if (demoUpstream) listeners.push({ name: 'demo-upstream', address: `127.0.0.1:${demoUpstream.port}` });
  } catch (err) {
    logger.fatal({ error: describeError(err) }, 'cannot start');
    await sidecar.shutdown();
    await demoUpstream?.close();
    return 1;
  }
  logStartupSummary(logger, {
    config,
    listeners,
    // The kernel probe ran once in sidecar.listen(), before the first connection.
    kernel: sidecar.kernelSummary(),
    demoCertificate: demoCert ? summarizeCert(demoCert.cert).subject : undefined,
  });

  let current = config;
  const watcher = config.config.watch
    ? watchConfigFile(config, {
        onChange: (next) => {
          flag.set(next.ktls.enabled, 'config_watch');
          metrics.configReload('success', 'config_watch');
        },
        onError: (err) => {
          metrics.configReload('failure', 'config_watch');
          logger.warn({ event: 'config_reload', trigger: 'config_watch', error: err.message }, 'config file change rejected; keeping the running config');
        },
      })
    : null;

  const reload = (): void => {
    const next = reloadConfig(current);
    if (next instanceof Error) {
      metrics.configReload('failure', 'sighup');
      logger.error({ event: 'config_reload', trigger: 'sighup', error: next.message }, 'SIGHUP: new config rejected; keeping the running config');
      return;
    }
    try {
      sidecar.applyConfig(next);
    } catch (err) {
      metrics.configReload('failure', 'sighup');
      logger.error({ event: 'config_reload', trigger: 'sighup', error: describeError(err) }, 'SIGHUP: new config rejected; keeping the running config');
      return;
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
        .then(() => admin.close())
        .then(() => demoUpstream?.close())
        .then(() => {
          logger.info({ event: 'exit', code: 0 }, 'stopped');
          resolve(0);
        });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', reload);
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
