// The listener: admission (maxConnections, draining), generations (everything
// one config needs; a reload makes a new one for new connections while open
// connections finish on theirs), certificate hot reload, config reload
// (SIGHUP), the startup kernel probe, readiness, drain on shutdown and kTLS
// drain on flag-off. A connection's own story is proxy/connection/accept.ts;
// what is counted and logged about it is proxy/observe/.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { type KtlsFlag, createKtlsFlag } from './ktls/flag.js';
import type { Config } from './config/schema.js';
import { HttpFront } from './fronts/http.js';
import { KtlsConnectionRegistry, attachDrainToFlag } from './ktls/drain.js';
import { type KernelProbe, probeKernel } from './ktls/probe.js';
import { type TlsStat, readTlsStatSync } from './ktls/tls-stat.js';
import type { KernelProbeSummary, Logger } from './log.js';
import { type KtlsNative, type NativeStatus, native as loadNative, nativeStatus as loadNativeStatus } from '../native/index.js';
import { type ConnectionContext, refuse, serveConnection } from './connection/accept.js';
import { markClose } from './plaintext-socket.js';
import { CpuAccounting } from './observe/cpu-accounting.js';
import { closeLog } from './observe/close-log.js';
import { type ConnectionObserver, type SidecarEvents, fanOut } from './observe/events.js';
import { metricsObserver } from './observe/metrics-observer.js';
import { type Readiness, type ReadinessCheck, UpstreamProbe, certificateCheck } from './readiness.js';
import { type CertPair, CertFileWatcher } from './tls/certs.js';
import type { TlsContexts } from './tls/context.js';
import { type GenerationDeps, type SidecarGeneration, buildGeneration, loadContexts, upstreamTarget } from './generation.js';

/** How long a shutdown waits for the connections it cut to report their close. */
const SHUTDOWN_CLOSE_WAIT_MS = 1000;

export interface SidecarOptions {
  config: Config;
  logger: Logger;
  /** The observation port (the composition root passes the Prometheus adapter). */
  events: SidecarEvents;
  /** Called once with the startup kernel probe and whether kTLS is usable (probe and native addon): the root registers its gauges. */
  onKernelProbe?: (probe: KernelProbe, kernelAvailable: boolean) => void;
  /** The in-memory certificate of demo mode (used when tls.cert is empty). */
  demoCert?: CertPair;
  /** Upstream URL to use instead of config.upstream.url (the demo upstream's real port). */
  upstreamUrl?: string;
  /** Debounce of certificate file changes, ms. */
  certReloadDebounceMs?: number;
  /** The runtime kTLS flag (PUT /ktls, SIGHUP, config watch); one is made from ktls.enabled when absent. */
  flag?: KtlsFlag;
  /**
   * The kernel probe result (tests inject one); absent: listen() runs
   * probeKernel() once. null: treated as a kernel without TLS.
   */
  probe?: KernelProbe | null;
  /** The native addon's status and loader (tests inject them); default native/index.ts. */
  nativeStatus?: NativeStatus;
  native?: () => KtlsNative;
  /** CPU accounting interval, ms (default 10 000). */
  cpuIntervalMs?: number;
}

export class Sidecar {
  private readonly listener: net.Server;
  private gen: SidecarGeneration;
  private readonly gens = new Set<SidecarGeneration>();
  private readonly raws = new Map<net.Socket, Duplex | undefined>();
  private nextId = 1;
  private draining = false;
  private drainPromise: Promise<void> | undefined;
  private onIdle: (() => void) | undefined;
  private certWatcher: CertFileWatcher | undefined;
  private readonly upstream = new UpstreamProbe();
  private readonly logger: Logger;
  private readonly events: SidecarEvents;
  private readonly observer: ConnectionObserver;
  private readonly flag: KtlsFlag;
  private kernel: KernelProbe | null = null;
  private probed = false;
  private readonly nativeAvailable: boolean;
  private readonly native: () => KtlsNative;
  /** Reads /proc/net/tls_stat around installs when a NIC may take TLS; null: always software kTLS. */
  private tlsStatReader: (() => TlsStat | null) | null = null;
  private readonly ktlsConns = new KtlsConnectionRegistry();
  private readonly detachDrain: () => void;
  private readonly cpu: CpuAccounting;
  private readonly genDeps: GenerationDeps;

  constructor(private readonly opts: SidecarOptions) {
    this.logger = opts.logger;
    this.events = opts.events;
    this.flag = opts.flag ?? createKtlsFlag({ enabled: opts.config.ktls.enabled, metrics: opts.events });
    this.nativeAvailable = (opts.nativeStatus ?? loadNativeStatus()).available;
    this.native = opts.native ?? loadNative;
    this.cpu = new CpuAccounting({ intervalMs: opts.cpuIntervalMs, onSplit: (split) => this.events.cpuSplit(split) });
    this.observer = fanOut(metricsObserver(this.events), closeLog(this.logger, () => this.gen.config.log.connections), this.cpu);
    // Flag on → off: live kTLS connections drain (drainTimeout / drainOnDisable of the current config).
    this.detachDrain = attachDrainToFlag(
      this.flag,
      this.ktlsConns,
      () => ({ drainOnDisable: this.gen.config.ktls.drainOnDisable, drainTimeout: this.gen.config.ktls.drainTimeout }),
      {
        ktlsDrained: (action) => this.events.ktlsDrained(action),
        hookFailed: (err) => this.logger.warn({ event: 'ktls_drain', err }, 'a drain hook failed; the connection is closed'),
        drainStarted: (summary, change) =>
          this.logger.info({ event: 'ktls_drain', source: change.current.source, draining: summary.draining, kept: summary.kept }, 'kTLS turned off: draining kTLS connections'),
      },
    );
    // keyWarnings: where certificate loading reports a private key other users can read (once per file and mode).
    this.genDeps = { demoCert: opts.demoCert, keyWarnings: { warn: (obj, msg) => this.logger.warn(obj, msg) }, events: this.events };
    this.gen = buildGeneration(opts.config, opts.upstreamUrl ?? opts.config.upstream.url, this.genDeps);
    this.gens.add(this.gen);
    this.setCertificateMetrics();
    // allowHalfOpen: TCP mode forwards half-close; the TLS socket inherits it.
    this.listener = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (raw) => this.onConnection(raw));
    this.watchCertificates();
  }

  get config(): Config {
    return this.gen.config;
  }

  /** Open connections (accepted and not yet closed). */
  get connections(): number {
    return this.raws.size;
  }

  /** The probe as the startup line reports it. */
  kernelSummary(): KernelProbeSummary {
    const p = this.kernel;
    if (!p) return { available: false, reason: 'not_probed', native: this.nativeAvailable };
    const ciphers: string[] = [];
    for (const c of p.details.ciphers) {
      if (c.direction !== 'tx' || !c.supported) continue;
      const rx = p.supports(c.version, c.cipher, 'rx');
      ciphers.push(`${c.version} ${c.cipher} ${rx ? 'tx+rx' : 'tx'}`);
    }
    return {
      release: p.details.release,
      available: p.available && this.nativeAvailable,
      reason: p.reasonIfNot,
      detail: p.reasonDetail,
      rekey: p.rekey,
      ciphers,
      native: this.nativeAvailable,
    };
  }

  /** Probe the kernel once, before the first connection can need the decision. */
  private async probeOnce(): Promise<void> {
    if (this.probed) return;
    this.probed = true;
    if (this.opts.probe !== undefined) {
      this.kernel = this.opts.probe;
    } else {
      const injected = this.opts.nativeStatus ? { native: { status: this.opts.nativeStatus, native: this.nativeAvailable ? this.native() : null } } : {};
      this.kernel = await probeKernel(injected);
    }
    const k = this.kernel;
    const available = (k?.available ?? false) && this.nativeAvailable;
    if (k) {
      this.opts.onKernelProbe?.(k, available);
      if (k.details.nicOffload.interfaces.some((i) => i.tx === true || i.rx === true)) this.tlsStatReader = () => readTlsStatSync();
    }
    this.events.setKernelAvailable(available);
  }

  async listen(): Promise<net.AddressInfo> {
    await this.probeOnce();
    this.cpu.start();
    const { host, port } = this.gen.config.listen;
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(port, host, () => {
        this.listener.off('error', reject);
        this.listener.on('error', (err) => this.logger.error({ err }, 'listener error'));
        resolve(this.listener.address() as net.AddressInfo);
      });
    });
  }

  address(): net.AddressInfo | null {
    return this.listener.address() as net.AddressInfo | null;
  }

  // ---------------------------------------------------------------- config

  /**
   * Apply a new config (SIGHUP). Throws ConfigError when its certificates are
   * unusable; the running config then stays. Listener and admin addresses
   * cannot move without a restart (reported in the log).
   */
  applyConfig(next: Config, upstreamUrl?: string): void {
    const prev = this.gen;
    const url = upstreamUrl ?? (next.demo && prev.config.demo ? prev.upstreamUrl : next.upstream.url);
    const gen = buildGeneration(next, url, this.genDeps);
    this.gen = gen;
    this.gens.add(gen);
    this.retire(prev);
    this.upstream.reset();
    this.setCertificateMetrics();
    this.watchCertificates();
    const restartKeys: string[] = [];
    if (next.listen.host !== prev.config.listen.host || next.listen.port !== prev.config.listen.port) restartKeys.push('listen');
    if (next.admin.host !== prev.config.admin.host || next.admin.port !== prev.config.admin.port) restartKeys.push('admin');
    if (restartKeys.length > 0) {
      this.logger.warn({ event: 'config_reload', keys: restartKeys }, `${restartKeys.join(', ')} changed: takes effect after a restart`);
    }
  }

  /** Re-read every certificate file; on failure the old certificates stay. Returns success. */
  private reloadCertificates(): boolean {
    try {
      const contexts = loadContexts(this.gen.config, this.genDeps);
      this.gen.handshaker.setContexts(contexts);
      (this.gen as { contexts: TlsContexts }).contexts = contexts;
      this.events.certReload('success');
      this.setCertificateMetrics();
      this.logger.info(
        { event: 'cert_reload', result: 'success', subject: contexts.defaultEntry.summary.subject, not_after: contexts.defaultEntry.summary.notAfter },
        'certificates reloaded',
      );
      return true;
    } catch (err) {
      this.events.certReload('failure');
      this.logger.warn({ event: 'cert_reload', result: 'failure', err }, 'certificate reload failed; keeping the previous certificates');
      return false;
    }
  }

  private watchCertificates(): void {
    this.certWatcher?.close();
    const files = this.gen.contexts.files;
    this.certWatcher = files.length > 0 ? new CertFileWatcher(files, () => this.reloadCertificates(), this.opts.certReloadDebounceMs) : undefined;
  }

  private setCertificateMetrics(): void {
    const c = this.gen.contexts.defaultEntry.summary;
    this.events.setCertificates([{ servername: '*', subject: c.subject, notAfter: Date.parse(c.notAfter) }]);
  }

  private retire(gen: SidecarGeneration): void {
    // The old generation's front keeps serving its open connections and is
    // closed (upstream keep-alive pool included) when the last one ends.
    gen.retired = true;
    this.dropIfDone(gen);
  }

  private dropIfDone(gen: SidecarGeneration): void {
    if (!gen.retired || gen.conns > 0 || !this.gens.has(gen)) return;
    this.gens.delete(gen);
    gen.engine?.close();
    if (gen.front instanceof HttpFront) gen.front.close();
  }

  // ------------------------------------------------------------ connections

  private onConnection(raw: net.Socket): void {
    const acceptedAt = performance.now();
    this.observer.accepted();
    raw.on('error', () => undefined); // reflected in 'close'; never crash on a reset
    const gen = this.gen;
    if (this.draining || this.raws.size >= gen.config.limits.maxConnections) {
      const reason = this.draining ? 'draining' : 'limit';
      refuse(this.observer, raw, { remoteAddress: raw.remoteAddress, remotePort: raw.remotePort, acceptedAt }, { refusal: { kind: 'rejected', reason } });
      return;
    }
    this.raws.set(raw, undefined);
    gen.conns++;
    raw.once('close', () => {
      this.raws.delete(raw);
      gen.conns--;
      this.dropIfDone(gen);
      if (this.raws.size === 0) this.onIdle?.();
    });
    raw.setNoDelay(true);
    const origin = { id: this.nextId++, raw, remoteAddress: raw.remoteAddress ?? '', remotePort: raw.remotePort ?? 0, acceptedAt };
    serveConnection(origin, this.connectionContext(gen)).catch((err: unknown) => {
      this.logger.error({ err }, 'connection pipeline failed');
      raw.destroy();
    });
  }

  /** What a connection of `gen` needs from the sidecar. */
  private connectionContext(gen: SidecarGeneration): ConnectionContext {
    return {
      gen,
      flag: this.flag,
      probe: this.kernel,
      nativeAvailable: this.nativeAvailable,
      native: this.native,
      tlsStat: this.tlsStatReader,
      observer: this.observer,
      open: this.raws,
      ktlsConns: this.ktlsConns,
    };
  }

  // ------------------------------------------------------------- readiness

  /** listening, certificates loaded, upstream accepts TCP (cached probe), not draining. */
  async readiness(): Promise<Readiness> {
    const checks: ReadinessCheck[] = [
      { name: 'listening', ok: this.listener.listening },
      certificateCheck(this.gen.contexts.defaultEntry.summary),
      await this.upstream.check(() => upstreamTarget(this.gen)),
      { name: 'not_draining', ok: !this.draining },
    ];
    return { ready: checks.every((c) => c.ok), checks };
  }

  // ----------------------------------------------------------------- drain

  /**
   * Graceful stop: no new connections, readiness 503, HTTP keep-alive ends
   * (Connection: close, GOAWAY), in-flight work gets up to
   * shutdown.drainTimeout, then whatever is left is closed.
   */
  shutdown(): Promise<void> {
    if (this.drainPromise) return this.drainPromise;
    this.draining = true;
    this.drainPromise = (async () => {
      this.logger.info({ event: 'drain', connections: this.raws.size, drain_timeout_ms: this.gen.config.shutdown.drainTimeout }, 'draining');
      this.listener.close();
      this.certWatcher?.close();
      this.detachDrain();
      this.cpu.stop();
      for (const g of this.gens) if (g.front instanceof HttpFront) g.front.drain();
      await this.idle(this.gen.config.shutdown.drainTimeout);
      const left = this.raws.size;
      for (const [raw, conn] of this.raws) {
        if (conn) {
          // The plaintext stream closes the TLS socket, which closes the raw one.
          markClose(conn, 'shutdown');
          conn.destroy();
        } else {
          raw.destroy();
        }
      }
      for (const g of this.gens) if (g.front instanceof HttpFront) g.front.close();
      // A cut connection is counted and logged from its 'close' event, which
      // a TLSSocket emits once its handle has closed (a loop turn or more
      // after destroy()): give those a moment before the process may exit.
      await this.idle(SHUTDOWN_CLOSE_WAIT_MS);
      this.logger.info({ event: 'drain_done', closed_by_timeout: left }, 'drain finished');
    })();
    return this.drainPromise;
  }

  /** Resolves when no connection is open, or after `ms`. */
  private idle(ms: number): Promise<void> {
    if (this.raws.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      t.unref();
      this.onIdle = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
