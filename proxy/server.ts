// The listener and the life of every connection:
//   accept (limits) → sniff → preHandshake()
//     ├─ kTLS impossible: Node TLSSocket on the raw socket (fast path)
//     └─ else: HandshakeEngine (offload hook = decide()) → hand-off → installKtls()
//   → record layer (proxy/pipeline/record-layer.ts) → front → close
// plus the startup kernel probe, certificate hot reload, config reload
// (SIGHUP), readiness, drain on shutdown and kTLS drain on flag-off.
// Everything one config needs (TLS contexts, handshake server, front) lives in
// a Generation; a reload makes a new one for new connections while open
// connections finish on the old one.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type KtlsFlag, createKtlsFlag } from './ktls/flag.js';
import { type SidecarMetrics, classifyEngineFailure } from './admin/metrics.js';
import { type CloseReason, type ConnectionProtocol, type KtlsReason as KtlsReasonLabel } from './vocabulary.js';
import type { Readiness, ReadinessCheck } from './admin/server.js';
import type { Config } from './config/schema.js';
import { describeError } from './errors.js';
import { HttpFront } from './fronts/http.js';
import { TcpFront, splitHostPort } from './fronts/tcp.js';
import { type HandshakeEngine, HandshakeError, MIN_BUFFERED_BYTES, type HandshakeResult } from './handshake/engine.js';
import { type KtlsDecision, decide, preHandshake } from './ktls/decision.js';
import { type KtlsDrainTarget, KtlsConnectionRegistry, attachDrainToFlag } from './ktls/drain.js';
import { CpuAccounting } from './ktls/cpu-accounting.js';
import type { InstallEvents } from './ktls/install.js';
import { type KernelProbe, probeKernel } from './ktls/probe.js';
import { registerProbeMetrics } from './ktls/probe-metrics.js';
import { type TlsStat, readTlsStatSync } from './ktls/tls-stat.js';
import { type KernelProbeSummary, type Logger, logConnectionClose } from './log.js';
import { type KtlsNative, type NativeStatus, native as loadNative, nativeStatus as loadNativeStatus } from '../native/index.js';
import { type ConnectionOrigin, factsFromEngine, factsFromTlsSocket } from './pipeline/connection-facts.js';
import type { HandshakeFacts } from './pipeline/facts.js';
import { Handshaker } from './pipeline/handshake.js';
import { PlainConnection, markClose } from './pipeline/plain-connection.js';
import { type RecordLayer, engineUserspaceReason, kernelRecordLayer, userspaceRecordLayer, wipeHandoff } from './pipeline/record-layer.js';
import { plainHttpResponse, sniff } from './pipeline/sniff.js';
import { type CertPair, CertFileWatcher } from './tls/certs.js';
import { TlsContexts, type TlsSettings } from './tls/context.js';

export interface SidecarOptions {
  config: Config;
  logger: Logger;
  metrics: SidecarMetrics;
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

/** A connection past its handshake with a record layer chosen. */
interface Opened {
  facts: HandshakeFacts;
  layer: RecordLayer;
  /** At least TX is in the kernel (tracked for drain). */
  kernel: boolean;
}

interface Generation {
  readonly config: Config;
  readonly contexts: TlsContexts;
  readonly handshaker: Handshaker;
  /** The handshake engine of this generation, made on first use (only kTLS-capable hosts need it). */
  engine: HandshakeEngine | undefined;
  readonly front: HttpFront | TcpFront;
  readonly upstreamUrl: string;
  /** Connections accepted by this generation and not yet closed. */
  conns: number;
  retired: boolean;
}

/** The tls.* keys as the TLS modules take them. */
export function tlsSettings(config: Config): TlsSettings {
  const t = config.tls;
  return {
    cert: t.cert,
    key: t.key,
    sni: t.sni.map((s) => ({ servername: s.servername, cert: s.cert, key: s.key })),
    minVersion: t.minVersion,
    ciphers: t.ciphers,
    ciphersuites: t.ciphersuites,
    clientCA: t.clientCA,
    requestCert: t.requestCert,
    sessionTickets: t.sessionTickets,
  };
}

/** How long a cached upstream probe result is trusted. */
const PROBE_TTL_MS = 2000;
const PROBE_TIMEOUT_MS = 1000;

export class Sidecar {
  private readonly listener: net.Server;
  private gen: Generation;
  private readonly gens = new Set<Generation>();
  private readonly raws = new Map<net.Socket, PlainConnection | undefined>();
  private nextId = 1;
  private draining = false;
  private drainPromise: Promise<void> | undefined;
  private onIdle: (() => void) | undefined;
  private certWatcher: CertFileWatcher | undefined;
  private probe: { at: number; check: ReadinessCheck } | undefined;
  private probeInFlight: Promise<ReadinessCheck> | undefined;
  private readonly logger: Logger;
  private readonly metrics: SidecarMetrics;
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
  /** Where certificate loading reports a private key other users can read (once per file and mode). */
  private readonly keyWarnings = { warn: (obj: object, msg: string): void => this.logger.warn(obj, msg) };

  constructor(private readonly opts: SidecarOptions) {
    this.logger = opts.logger;
    this.metrics = opts.metrics;
    this.flag = opts.flag ?? createKtlsFlag({ enabled: opts.config.ktls.enabled, metrics: opts.metrics });
    this.nativeAvailable = (opts.nativeStatus ?? loadNativeStatus()).available;
    this.native = opts.native ?? loadNative;
    this.cpu = new CpuAccounting({ intervalMs: opts.cpuIntervalMs, onSplit: (split) => this.metrics.cpuSplit(split) });
    // Flag on → off: live kTLS connections drain (drainTimeout / drainOnDisable of the current config).
    this.detachDrain = attachDrainToFlag(
      this.flag,
      this.ktlsConns,
      () => ({ drainOnDisable: this.gen.config.ktls.drainOnDisable, drainTimeout: this.gen.config.ktls.drainTimeout }),
      {
        ktlsDrained: (action) => this.metrics.ktlsDrained(action),
        hookFailed: (err) => this.logger.warn({ event: 'ktls_drain', error: describeError(err) }, 'a drain hook failed; the connection is closed'),
        drainStarted: (summary, change) =>
          this.logger.info({ event: 'ktls_drain', source: change.current.source, draining: summary.draining, kept: summary.kept }, 'kTLS turned off: draining kTLS connections'),
      },
    );
    this.gen = this.buildGeneration(opts.config, opts.upstreamUrl ?? opts.config.upstream.url);
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

  /** The kernel probe (after listen()); null when none ran or it could not run. */
  get kernelProbe(): KernelProbe | null {
    return this.kernel;
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
    if (k) {
      registerProbeMetrics(this.metrics.registry, k);
      if (k.details.nicOffload.interfaces.some((i) => i.tx === true || i.rx === true)) this.tlsStatReader = () => readTlsStatSync();
    }
    this.metrics.setKernelAvailable((k?.available ?? false) && this.nativeAvailable);
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

  private buildGeneration(config: Config, upstreamUrl: string): Generation {
    const settings = tlsSettings(config);
    // Throws ConfigError (naming the key) on a bad certificate: the caller keeps the old generation.
    const contexts = TlsContexts.load(settings, config.demo ? this.opts.demoCert : undefined, this.keyWarnings);
    const alpn = config.mode === 'http' ? ['h2', 'http/1.1'] : [];
    const handshaker = new Handshaker(contexts, settings, alpn, config.timeouts.handshake);
    const front =
      config.mode === 'http'
        ? new HttpFront({
            upstreamUrl,
            clientCertHeader: config.tls.clientCertHeader,
            maxHeaderSize: config.limits.maxHeaderSize,
            timeouts: config.timeouts,
            upstream: config.upstream,
            limits: config.limits,
            metrics: this.metrics,
          })
        : new TcpFront({
            upstreamAddress: config.upstream.address,
            proxyProtocol: config.upstream.proxyProtocol,
            upstreamConnectMs: config.timeouts.upstreamConnect,
            idleMs: config.timeouts.idle,
            metrics: this.metrics,
          });
    return { config, contexts, handshaker, engine: undefined, front, upstreamUrl, conns: 0, retired: false };
  }

  /** The generation's handshake engine, on the handshaker's own options and contexts. */
  private engineOf(gen: Generation): HandshakeEngine {
    const limit = gen.config.limits.maxHandshakeBufferBytes;
    // The engine needs room for two maximal records; 0 (no limit) gets a generous cap.
    gen.engine ??= gen.handshaker.createEngine({
      handshakeTimeoutMs: gen.config.timeouts.handshake,
      maxBufferedBytes: Math.max(MIN_BUFFERED_BYTES, limit > 0 ? limit : 64 * 1024 * 1024),
    });
    return gen.engine;
  }

  /**
   * Apply a new config (SIGHUP). Throws ConfigError when its certificates are
   * unusable; the running config then stays. Listener and admin addresses
   * cannot move without a restart (reported in the log).
   */
  applyConfig(next: Config, upstreamUrl?: string): void {
    const prev = this.gen;
    const url = upstreamUrl ?? (next.demo && prev.config.demo ? prev.upstreamUrl : next.upstream.url);
    const gen = this.buildGeneration(next, url);
    this.gen = gen;
    this.gens.add(gen);
    this.retire(prev);
    this.probe = undefined;
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
  reloadCertificates(): boolean {
    try {
      const contexts = TlsContexts.load(tlsSettings(this.gen.config), this.gen.config.demo ? this.opts.demoCert : undefined, this.keyWarnings);
      this.gen.handshaker.setContexts(contexts);
      (this.gen as { contexts: TlsContexts }).contexts = contexts;
      this.metrics.certReload('success');
      this.setCertificateMetrics();
      this.logger.info(
        { event: 'cert_reload', result: 'success', subject: contexts.defaultEntry.summary.subject, not_after: contexts.defaultEntry.summary.notAfter },
        'certificates reloaded',
      );
      return true;
    } catch (err) {
      this.metrics.certReload('failure');
      this.logger.warn({ event: 'cert_reload', result: 'failure', error: describeError(err) }, 'certificate reload failed; keeping the previous certificates');
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
    this.metrics.setCertificates([{ servername: '*', subject: c.subject, notAfter: Date.parse(c.notAfter) }]);
  }

  private retire(gen: Generation): void {
    // The old generation's front keeps serving its open connections and is
    // closed (upstream keep-alive pool included) when the last one ends.
    gen.retired = true;
    this.dropIfDone(gen);
  }

  private dropIfDone(gen: Generation): void {
    if (!gen.retired || gen.conns > 0 || !this.gens.has(gen)) return;
    this.gens.delete(gen);
    gen.engine?.close();
    if (gen.front instanceof HttpFront) gen.front.close();
  }

  // ------------------------------------------------------------ connections

  private onConnection(raw: net.Socket): void {
    const acceptedAt = performance.now();
    this.metrics.connectionAccepted();
    raw.on('error', () => undefined); // reflected in 'close'; never crash on a reset
    if (this.draining) {
      this.metrics.connectionRejected('draining');
      this.logReject(raw, 'draining', acceptedAt);
      raw.destroy();
      return;
    }
    const gen = this.gen;
    if (this.raws.size >= gen.config.limits.maxConnections) {
      this.metrics.connectionRejected('limit');
      this.logReject(raw, 'limit', acceptedAt);
      raw.destroy();
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
    this.runConnection(raw, gen, acceptedAt).catch((err: unknown) => {
      this.logger.error({ error: describeError(err) }, 'connection pipeline failed');
      raw.destroy();
    });
  }

  private async runConnection(raw: net.Socket, gen: Generation, acceptedAt: number): Promise<void> {
    const id = this.nextId++;
    const remoteAddress = raw.remoteAddress ?? '';
    const remotePort = raw.remotePort ?? 0;
    const origin: ConnectionOrigin = { id, raw, remoteAddress, remotePort, acceptedAt };
    const timer = { timedOut: false };
    const deadline = setTimeout(() => {
      timer.timedOut = true;
      raw.destroy();
    }, gen.config.timeouts.handshake);

    const verdict = await sniff(raw);
    if (verdict !== 'tls') {
      clearTimeout(deadline);
      if (verdict === 'closed') {
        // Nothing sent: a TCP health check or port scan (or our own deadline).
        const reason = timer.timedOut ? 'handshake_timeout' : 'no_data';
        this.metrics.connectionRejected(reason);
        this.logReject(raw, reason, acceptedAt, id, remoteAddress, remotePort);
        // The listener is allowHalfOpen: after the client's FIN the socket stays
        // open (CLOSE-WAIT, holding its slot and fd) until we close our side.
        raw.destroy();
        return;
      }
      if (verdict === 'http') {
        this.metrics.connectionRejected('plain_http');
        this.logReject(raw, 'plain_http', acceptedAt, id, remoteAddress, remotePort);
        raw.end(plainHttpResponse());
        // Do not wait for the client's FIN forever.
        setTimeout(() => raw.destroy(), 2000).unref();
      } else {
        this.metrics.connectionRejected('not_tls');
        this.logReject(raw, 'not_tls', acceptedAt, id, remoteAddress, remotePort);
        raw.destroy();
      }
      return;
    }

    // docs/ktls.md §7: one draw per connection, used by both halves of the
    // decision. When kTLS is impossible whatever the handshake says, Node's
    // TLSSocket on the raw socket is the (faster) way; otherwise the handshake
    // engine, which can hand the record layer to the kernel.
    const draw = Math.random();
    const pre = preHandshake({ flag: this.flag.enabled, ktls: gen.config.ktls, probe: this.kernel, nativeAvailable: this.nativeAvailable, draw });
    let opened: Opened | null;
    try {
      opened = pre.engine
        ? await this.engineHandshake(origin, gen, draw, timer)
        : await this.tlsSocketHandshake(origin, gen, pre.decision.reason as Exclude<KtlsReasonLabel, 'enabled'>, timer);
    } catch (err) {
      // Both paths count their outcome right before they return, so one that
      // threw (a bug) counted nothing: count it here, or accepted would no
      // longer equal rejected + handshake failures + opened.
      this.metrics.handshakeFailed('internal_error');
      this.logReject(raw, 'handshake_internal_error', acceptedAt, id, remoteAddress, remotePort, err);
      raw.destroy();
      return;
    } finally {
      clearTimeout(deadline);
    }
    if (opened) this.openConnection(origin, gen, opened);
  }

  /** The fast path: Node's TLSSocket on the raw socket, labelled with the pre-handshake decision's reason. */
  private async tlsSocketHandshake(
    origin: ConnectionOrigin,
    gen: Generation,
    reason: Exclude<KtlsReasonLabel, 'enabled'>,
    timer: { timedOut: boolean },
  ): Promise<Opened | null> {
    const { raw, id, remoteAddress, remotePort, acceptedAt } = origin;
    // limits.maxHandshakeBufferBytes: the raw socket's byte count (it includes
    // the handshake ciphertext node's TLS stack buffers) is checked while the
    // handshake runs and once at its end, so an oversized flight never passes.
    const limit = gen.config.limits.maxHandshakeBufferBytes;
    let overLimit = false;
    const overLimitNow = (): boolean => limit > 0 && raw.bytesRead > limit;
    const poll = setInterval(() => {
      // Mid-handshake the raw socket is the one to close (node's TLS socket
      // follows its parent), exactly as the handshake deadline does.
      if (!overLimit && overLimitNow()) {
        overLimit = true;
        raw.destroy();
      }
    }, 50);
    const outcome = await gen.handshaker.handshake(raw);
    clearInterval(poll);
    if (overLimit || overLimitNow()) {
      // After a completed handshake only the TLS socket may be destroyed: it
      // closes the raw socket itself, and closing both would close the fd twice.
      if (outcome.ok) outcome.tls.destroy();
      else if (!raw.destroyed) raw.destroy();
      this.metrics.connectionRejected('handshake_buffer_limit');
      this.logReject(raw, 'handshake_buffer_limit', acceptedAt, id, remoteAddress, remotePort);
      return null;
    }
    if (!outcome.ok) {
      const failure = timer.timedOut ? 'timeout' : outcome.reason;
      this.metrics.handshakeFailed(failure);
      this.logReject(raw, `handshake_${failure}`, acceptedAt, id, remoteAddress, remotePort, outcome.error);
      if (!raw.destroyed) raw.destroy();
      return null;
    }
    const tls = outcome.tls;
    tls.on('error', () => undefined); // the PlainConnection reports stream errors
    const facts = factsFromTlsSocket(origin, gen.contexts, tls);
    return { facts, layer: userspaceRecordLayer(tls, facts, reason), kernel: false };
  }

  /**
   * The handshake engine: offload hook → decide(); every hand-off goes to
   * kernelRecordLayer() (kTLS, or the JS record layer when the decision says
   * userspace). Only a connection without an exact hand-off state stays on
   * the TLSSocket over the engine's Duplex: counted and logged, since that is
   * the path of nodejs/node#35384 (an assertion that ends the process).
   */
  private async engineHandshake(origin: ConnectionOrigin, gen: Generation, draw: number, timer: { timedOut: boolean }): Promise<Opened | null> {
    const { raw, id, remoteAddress, remotePort, acceptedAt } = origin;
    const engine = this.engineOf(gen);
    let decision: KtlsDecision | undefined;
    let result: HandshakeResult;
    try {
      result = await engine.accept(raw, {
        offload: (f) =>
          (decision = decide({ flag: this.flag.enabled, ktls: gen.config.ktls, probe: this.kernel, nativeAvailable: this.nativeAvailable, facts: f, draw }))
            .mode !== 'userspace',
        jsStreamWriteRefused: () => {
          this.metrics.internalError('js_stream_write_refused');
          this.logger.warn({ conn: id, event: 'js_stream_write_refused' }, 'TLS wrote over the engine stream during its shutdown: write failed, connection ends');
        },
      });
    } catch (err) {
      // Counted exactly like the TLSSocket path's failures (classifyEngineFailure).
      const c = timer.timedOut
        ? ({ kind: 'handshake_failure', reason: 'timeout' } as const)
        : classifyEngineFailure(err instanceof HandshakeError ? err.reason : 'internal_error');
      if (c.kind === 'rejected') {
        this.metrics.connectionRejected(c.reason);
        this.logReject(raw, c.reason, acceptedAt, id, remoteAddress, remotePort);
      } else {
        this.metrics.handshakeFailed(c.reason);
        this.logReject(raw, `handshake_${c.reason}`, acceptedAt, id, remoteAddress, remotePort, err);
      }
      if (!raw.destroyed) raw.destroy();
      return null;
    }

    const refusal = gen.handshaker.checkClient(result.facts.authorized, result.facts.peerCertificate !== null, result.facts.authorizationError);
    if (refusal || timer.timedOut || raw.destroyed) {
      if (result.mode === 'handoff') {
        wipeHandoff(result);
        raw.destroy();
      } else {
        result.tlsSocket.destroy();
      }
      const failure = refusal ? refusal.reason : timer.timedOut ? 'timeout' : 'reset';
      this.metrics.handshakeFailed(failure);
      this.logReject(raw, `handshake_${failure}`, acceptedAt, id, remoteAddress, remotePort, refusal?.error);
      return null;
    }

    if (result.mode === 'userspace') {
      // No exact state to hand off (a suite the tracker cannot follow, tracking
      // out of step, OpenSSL not quiet): on doubt stay with OpenSSL, which has
      // the whole truth — over the Duplex, so count it and say so.
      const tls = result.tlsSocket;
      tls.on('error', () => undefined); // the PlainConnection reports stream errors
      tls.allowHalfOpen = true; // half-close is part of the application protocol (tcp mode)
      const facts = factsFromTlsSocket(origin, gen.contexts, tls);
      const reason = engineUserspaceReason(result.reason, decision, facts.tlsVersion);
      this.metrics.internalError('engine_fallback');
      // A suite the operator enabled is expected; the other reasons are engine trouble.
      const level = result.reason === 'cipher_not_offloadable' ? 'info' : 'warn';
      this.logger[level](
        { conn: id, event: 'engine_fallback', engine_reason: result.reason, ktls_reason: reason, cipher: facts.cipher },
        'no exact hand-off state: the connection stays on Node\'s TLS over the engine\'s stream',
      );
      return { facts, layer: userspaceRecordLayer(tls, facts, reason, result.reason), kernel: false };
    }

    const facts = factsFromEngine(origin, gen.contexts, result.facts);
    // A userspace decision hands off too: kernelRecordLayer() keeps its keys in
    // the JS record layer. No decision at all means the hook threw (a bug).
    if (!decision || (decision.mode !== 'userspace') !== result.offload) {
      wipeHandoff(result);
      raw.destroy();
      this.metrics.handshakeFailed('internal_error');
      this.logReject(raw, 'handshake_internal_error', acceptedAt, id, remoteAddress, remotePort);
      return null;
    }
    try {
      const layer = await kernelRecordLayer({
        handoff: result,
        facts,
        decision,
        native: this.native(),
        rekeySupported: this.kernel?.rekey ?? false,
        keyUpdateRateLimit: gen.config.ktls.keyUpdateRateLimit,
        events: this.installEvents(id),
        metrics: this.metrics,
        tlsStat: this.tlsStatReader,
      });
      return { facts, layer, kernel: layer.decision.mode !== 'userspace' };
    } catch (err) {
      // The connection could not go on (a key was in the kernel and the other
      // failed, or the peer closed during the install); the socket is gone.
      if (!raw.destroyed) raw.destroy();
      this.metrics.connectionRejected('other');
      this.logReject(raw, 'ktls_install_aborted', acceptedAt, id, remoteAddress, remotePort, err);
      return null;
    }
  }

  /** What a kTLS connection reports, mapped onto the metrics module (docs/ktls.md §7). */
  private installEvents(id: number): InstallEvents {
    return {
      syscallError: (info) => {
        // EAGAIN is the normal "nothing to read yet", not an error.
        if (info.kind !== 'would_block') this.metrics.ktlsError(info.errno, info.stage);
      },
      // Kernel EBADMSG already came through syscallError; a JS decrypt failure is counted here.
      decryptError: (where) => {
        if (where === 'userspace') this.metrics.ktlsError('EBADMSG', 'decrypt');
      },
      keyUpdate: (direction, result) => this.metrics.keyUpdate(direction, result),
      installFailed: (info) => {
        // Counted by syscallError just before; the line says why this connection stays in JS.
        this.logger.debug({ conn: id, event: 'ktls_install_failed', errno: info.errno, stage: info.stage }, 'kTLS install failed; continuing in userspace');
      },
      installAborted: (info) => {
        this.logger.warn({ conn: id, event: 'ktls_install_aborted', errno: info.errno, stage: info.stage }, 'kTLS RX install failed after TX: connection closed');
      },
      // At most twice per connection (a second attempt closes it); the close line counts them too.
      renegotiationRefused: (fatal) => {
        this.logger.info(
          { conn: id, event: 'tls_renegotiation_refused', fatal },
          fatal ? 'client renegotiation asked again: connection closed' : 'client renegotiation refused (no_renegotiation)',
        );
      },
    };
  }

  /** Past the handshake: metrics, PlainConnection, drain registration, close line, front. */
  private openConnection(origin: ConnectionOrigin, gen: Generation, opened: Opened): void {
    const { raw, id, remoteAddress, remotePort, acceptedAt } = origin;
    const { facts, layer } = opened;
    const protocol: ConnectionProtocol = gen.config.mode === 'tcp' ? 'tcp' : facts.alpn === 'h2' ? 'h2' : 'http1';
    this.metrics.handshakeCompleted({
      tlsVersion: facts.tlsVersion,
      cipher: facts.cipher,
      protocol,
      durationSeconds: (performance.now() - acceptedAt) / 1000,
    });
    facts.ktls = layer.labels.ktls;
    const cm = this.metrics.connectionOpened({ ...layer.labels, protocol });
    const conn = new PlainConnection(layer.stream, facts);
    const mode = layer.labels.ktls;
    conn.onBytes = (rx, tx) => {
      cm.bytes(rx, tx);
      this.cpu.addBytes(mode, rx + tx);
    };
    if (raw.destroyed) {
      conn.destroy();
    } else {
      this.raws.set(raw, conn);
    }
    if (opened.kernel && !conn.destroyed) {
      // Every kTLS connection is tracked, so the flag turning off reaches it.
      this.ktlsConns.track(conn, this.drainTarget(gen, conn, protocol));
    }
    let error: unknown;
    conn.on('error', (err) => {
      error = err;
      markClose(conn, 'error');
    });
    conn.once('close', () => {
      const reason: CloseReason = conn.closeReason ?? (error ? 'error' : 'client_close');
      cm.close(reason);
      logConnectionClose(this.logger, {
        id,
        remoteAddress,
        remotePort,
        servername: facts.servername,
        protocol,
        tlsVersion: facts.tlsVersion,
        cipher: facts.cipher,
        alpn: facts.alpn,
        bytesIn: conn.bytesIn,
        bytesOut: conn.bytesOut,
        durationMs: performance.now() - acceptedAt,
        closeReason: reason,
        ktls: layer.labels.ktls,
        ktlsReason: layer.labels.ktls_reason,
        direction: layer.labels.direction,
        error,
        ktlsInfo: layer.closeInfo(),
      });
      // The plaintext stream is gone: make sure the TCP socket goes with it.
      if (!raw.destroyed) raw.destroy();
    });
    if (!conn.destroyed) gen.front.handle(conn, facts);
  }

  /**
   * The drain hook of one kTLS connection, from its front (HTTP/1.1:
   * Connection: close; h2: GOAWAY; tcp/WebSocket: end our side). The
   * registry closes whatever is still open at ktls.drainTimeout.
   */
  private drainTarget(gen: Generation, conn: PlainConnection, protocol: ConnectionProtocol): KtlsDrainTarget {
    const front = gen.front;
    if (front instanceof HttpFront) return front.drainTarget(conn, protocol === 'h2' ? 'h2' : 'http1');
    return front.drainTarget(conn);
  }

  private logReject(
    raw: net.Socket,
    reason: string,
    acceptedAt: number,
    id?: number,
    remoteAddress = raw.remoteAddress,
    remotePort = raw.remotePort,
    error?: unknown,
  ): void {
    logConnectionClose(this.logger, {
      id,
      remoteAddress,
      remotePort,
      protocol: 'none',
      bytesIn: 0,
      bytesOut: 0,
      durationMs: performance.now() - acceptedAt,
      closeReason: reason,
      ktls: 'off',
      ktlsReason: 'not_attempted',
      error,
    });
  }

  // ------------------------------------------------------------- readiness

  /** listening, certificates loaded, upstream accepts TCP (cached probe), not draining. */
  async readiness(): Promise<Readiness> {
    const checks: ReadinessCheck[] = [
      { name: 'listening', ok: this.listener.listening },
      this.certificateCheck(),
      await this.upstreamCheck(),
      { name: 'not_draining', ok: !this.draining },
    ];
    return { ready: checks.every((c) => c.ok), checks };
  }

  private certificateCheck(): ReadinessCheck {
    const c = this.gen.contexts.defaultEntry.summary;
    const expired = Date.parse(c.notAfter) <= Date.now();
    return { name: 'certificates', ok: !expired, detail: `${c.subject}, not after ${c.notAfter}${expired ? ' (expired)' : ''}` };
  }

  private upstreamTarget(): { host: string; port: number } {
    if (this.gen.config.mode === 'tcp') return splitHostPort(this.gen.config.upstream.address);
    const u = new URL(this.gen.upstreamUrl);
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)) };
  }

  private upstreamCheck(): Promise<ReadinessCheck> {
    const now = performance.now();
    if (this.probe && now - this.probe.at < PROBE_TTL_MS) return Promise.resolve(this.probe.check);
    if (this.probeInFlight) return this.probeInFlight;
    const { host, port } = this.upstreamTarget();
    this.probeInFlight = new Promise<ReadinessCheck>((resolve) => {
      const s = net.connect({ host, port });
      const done = (ok: boolean, detail: string): void => {
        s.destroy();
        clearTimeout(t);
        const check = { name: 'upstream', ok, detail };
        this.probe = { at: performance.now(), check };
        this.probeInFlight = undefined;
        resolve(check);
      };
      const t = setTimeout(() => done(false, `${host}:${port} connect timeout`), PROBE_TIMEOUT_MS);
      s.once('connect', () => done(true, `${host}:${port}`));
      s.once('error', (err: NodeJS.ErrnoException) => done(false, `${host}:${port} ${err.code ?? err.message}`));
    });
    return this.probeInFlight;
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
      if (this.raws.size > 0) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.gen.config.shutdown.drainTimeout);
          t.unref();
          this.onIdle = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
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
      this.logger.info({ event: 'drain_done', closed_by_timeout: left }, 'drain finished');
    })();
    return this.drainPromise;
  }

  get isDraining(): boolean {
    return this.draining;
  }
}
