// The listener and the life of every connection:
//   accept (limits) → sniff → handshake → selectRecordLayer() → front → close
// plus certificate hot reload, config reload (SIGHUP), readiness and drain.
// Everything one config needs (TLS contexts, handshake server, front) lives in
// a Generation; a reload makes a new one for new connections while open
// connections finish on the old one.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { KtlsFlag } from './admin/flag.js';
import type { CloseReason, ConnectionProtocol, SidecarMetrics } from './admin/metrics.js';
import type { Readiness, ReadinessCheck } from './admin/server.js';
import type { Config } from './config/schema.js';
import { describeError } from './errors.js';
import { HttpFront } from './fronts/http.js';
import { TcpFront, splitHostPort } from './fronts/tcp.js';
import { type Logger, logConnectionClose } from './log.js';
import type { HandshakeFacts } from './pipeline/facts.js';
import { Handshaker, clientIdentity } from './pipeline/handshake.js';
import { PlainConnection, markClose } from './pipeline/plain-connection.js';
import { selectRecordLayer } from './pipeline/record-layer.js';
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
  /** The runtime kTLS flag, handed to the record-layer step. */
  flag?: KtlsFlag;
}

interface Generation {
  readonly config: Config;
  readonly contexts: TlsContexts;
  readonly handshaker: Handshaker;
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

  constructor(private readonly opts: SidecarOptions) {
    this.logger = opts.logger;
    this.metrics = opts.metrics;
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

  listen(): Promise<net.AddressInfo> {
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
    const contexts = TlsContexts.load(settings, config.demo ? this.opts.demoCert : undefined);
    const alpn = config.mode === 'http' ? ['h2', 'http/1.1'] : [];
    const handshaker = new Handshaker(contexts, settings, alpn, config.timeouts.handshake);
    const front =
      config.mode === 'http'
        ? new HttpFront({
            upstreamUrl,
            clientCertHeader: config.tls.clientCertHeader,
            maxHeaderSize: config.limits.maxHeaderSize,
            timeouts: config.timeouts,
            metrics: this.metrics,
          })
        : new TcpFront({
            upstreamAddress: config.upstream.address,
            proxyProtocol: config.upstream.proxyProtocol,
            upstreamConnectMs: config.timeouts.upstreamConnect,
            idleMs: config.timeouts.idle,
            metrics: this.metrics,
          });
    return { config, contexts, handshaker, front, upstreamUrl, conns: 0, retired: false };
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
      const contexts = TlsContexts.load(tlsSettings(this.gen.config), this.gen.config.demo ? this.opts.demoCert : undefined);
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
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      raw.destroy();
    }, gen.config.timeouts.handshake);

    const verdict = await sniff(raw);
    if (verdict !== 'tls') {
      clearTimeout(deadline);
      if (verdict === 'closed') {
        // Nothing sent: a TCP health check or port scan (or our own deadline).
        if (timedOut) this.metrics.connectionRejected('handshake_timeout');
        this.logReject(raw, timedOut ? 'handshake_timeout' : 'no_data', acceptedAt, id, remoteAddress, remotePort);
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
    clearTimeout(deadline);
    clearInterval(poll);
    if (overLimit || overLimitNow()) {
      // After a completed handshake only the TLS socket may be destroyed: it
      // closes the raw socket itself, and closing both would close the fd twice.
      if (outcome.ok) outcome.tls.destroy();
      else if (!raw.destroyed) raw.destroy();
      this.metrics.connectionRejected('handshake_buffer_limit');
      this.logReject(raw, 'handshake_buffer_limit', acceptedAt, id, remoteAddress, remotePort);
      return;
    }
    if (!outcome.ok) {
      const reason = timedOut ? 'timeout' : outcome.reason;
      this.metrics.handshakeFailed(reason);
      this.logReject(raw, `handshake_${reason}`, acceptedAt, id, remoteAddress, remotePort, outcome.error);
      if (!raw.destroyed) raw.destroy();
      return;
    }
    const tls = outcome.tls;
    tls.on('error', () => undefined); // the PlainConnection reports stream errors
    const cipher = tls.getCipher();
    const servername = typeof tls.servername === 'string' ? tls.servername : '';
    const served = gen.contexts.lookup(servername).summary;
    const facts: HandshakeFacts = {
      id,
      remoteAddress,
      remotePort,
      localAddress: raw.localAddress ?? '',
      localPort: raw.localPort ?? 0,
      servername,
      alpn: typeof tls.alpnProtocol === 'string' ? tls.alpnProtocol : '',
      tlsVersion: tls.getProtocol() ?? 'none',
      cipher: cipher.standardName || cipher.name,
      cipherOpenssl: cipher.name,
      localCertHash: served.sha256,
      localCertBy: served.uri,
      client: clientIdentity(tls),
      resumed: tls.isSessionReused(),
      acceptedAt,
      ktls: 'off',
    };
    const protocol: ConnectionProtocol = gen.config.mode === 'tcp' ? 'tcp' : facts.alpn === 'h2' ? 'h2' : 'http1';
    this.metrics.handshakeCompleted({
      tlsVersion: facts.tlsVersion,
      cipher: facts.cipher,
      protocol,
      durationSeconds: (performance.now() - acceptedAt) / 1000,
    });

    const layer = await selectRecordLayer({ tls, raw, facts, policy: { flag: this.opts.flag, ktls: gen.config.ktls } });
    facts.ktls = layer.labels.ktls;
    const cm = this.metrics.connectionOpened({ ...layer.labels, protocol });
    const conn = new PlainConnection(layer.stream, facts);
    conn.onBytes = (rx, tx) => cm.bytes(rx, tx);
    if (raw.destroyed) {
      conn.destroy();
    } else {
      this.raws.set(raw, conn);
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
        servername,
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
        ...layer.closeInfo(),
      });
      // The plaintext stream is gone: make sure the TCP socket goes with it.
      if (!raw.destroyed) raw.destroy();
    });
    if (!conn.destroyed) gen.front.handle(conn, facts);
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
