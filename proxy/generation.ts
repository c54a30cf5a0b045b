// A generation: everything one config needs (TLS contexts, the handshaker
// both handshake paths share, the front). A reload makes a new one for new
// connections while open connections finish on theirs (proxy/server.ts).
import type { Config } from './config/schema.js';
import type { Generation } from './connection/accept.js';
import { Handshaker } from './connection/node-handshake.js';
import { HttpFront } from './fronts/http.js';
import { TcpFront, splitHostPort } from './fronts/tcp.js';
import type { SidecarEvents } from './observe/events.js';
import type { CertPair } from './tls/certs.js';
import { TlsContexts, type TlsSettings } from './tls/context.js';

/** The listener's view of a generation: the connection's, plus its upstream and open-connection count. */
export interface SidecarGeneration extends Generation {
  readonly front: HttpFront | TcpFront;
  readonly upstreamUrl: string;
  /** Connections accepted by this generation and not yet closed. */
  conns: number;
  retired: boolean;
}

export interface GenerationDeps {
  /** The in-memory certificate of demo mode (used when tls.cert is empty). */
  readonly demoCert: CertPair | undefined;
  /** Where certificate loading reports a private key other users can read. */
  readonly keyWarnings: { warn(obj: object, msg: string): void };
  readonly events: SidecarEvents;
}

/** The tls.* keys as the TLS modules take them (TlsSettings wants its own, mutable, SNI list). */
function tlsSettings(config: Config): TlsSettings {
  return { ...config.tls, sni: [...config.tls.sni] };
}

/** Load every certificate of `config`. Throws ConfigError (naming the key) on a bad one. */
export function loadContexts(config: Config, deps: GenerationDeps): TlsContexts {
  return TlsContexts.load(tlsSettings(config), config.demo ? deps.demoCert : undefined, deps.keyWarnings);
}

/** Throws ConfigError on a bad certificate: the caller keeps the old generation. */
export function buildGeneration(config: Config, upstreamUrl: string, deps: GenerationDeps): SidecarGeneration {
  const contexts = loadContexts(config, deps);
  const alpn = config.mode === 'http' ? ['h2', 'http/1.1'] : [];
  const handshaker = new Handshaker(contexts, tlsSettings(config), alpn, config.timeouts.handshake);
  const front =
    config.mode === 'http'
      ? new HttpFront({
          upstreamUrl,
          clientCertHeader: config.tls.clientCertHeader,
          maxHeaderSize: config.limits.maxHeaderSize,
          timeouts: config.timeouts,
          upstream: config.upstream,
          limits: config.limits,
          spliceMinBody: config.ktls.spliceMinBody,
          metrics: deps.events,
        })
      : new TcpFront({
          upstreamAddress: config.upstream.address,
          proxyProtocol: config.upstream.proxyProtocol,
          upstreamConnectMs: config.timeouts.upstreamConnect,
          idleMs: config.timeouts.idle,
          metrics: deps.events,
        });
  return { config, contexts, handshaker, engine: undefined, front, upstreamUrl, conns: 0, retired: false };
}

/** Where the readiness probe connects: the tcp upstream, or the HTTP upstream URL's host and port. */
export function upstreamTarget(gen: SidecarGeneration): { host: string; port: number } {
  if (gen.config.mode === 'tcp') return splitHostPort(gen.config.upstream.address);
  const u = new URL(gen.upstreamUrl);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)) };
}
