// The Node fast path: connections that can never be offloaded are handed to
// a tls.Server that never listens (`emit('connection', raw)`): node's TLS
// stack does the handshake over the socket we own, and we get the resulting
// TLSSocket back in 'secureConnection' / the failure in 'tlsClientError'.
// The Handshaker also owns what both paths share: the server options (so
// certificates, SNI, ALPN, mTLS and tickets can never differ) and the mTLS
// policy.
import type net from 'node:net';
import tls from 'node:tls';
import { TlsContexts, type TlsSettings } from '../tls/context.js';
import type { HandshakeFailureReason, KtlsReason } from '../vocabulary.js';
import { HandshakeEngine } from '../handshake/engine.js';
import { tlsFactsOf } from '../handshake/facts.js';
import { tlsErrorReason } from '../handshake/failure.js';
import type { Generation, Opened, Refused } from './accept.js';
import { type ConnectionOrigin, connectionFacts } from './facts.js';
import { userspaceRecordLayer } from './record-layer.js';

export type HandshakeOutcome =
  | { ok: true; tls: tls.TLSSocket }
  | { ok: false; reason: HandshakeFailureReason; error: Error };

/** What the mTLS policy says about a finished handshake: null = let it through. */
export type MtlsRefusal = { reason: 'client_cert_required' | 'client_cert_invalid'; error: Error } | null;

/**
 * A running handshake's outcome callback, kept on its raw socket (how a
 * 'secureConnection' finds its accept). Not a WeakMap: V8 keeps a young key
 * and its value alive through scavenges while the entry exists, promoting
 * every connection's objects (see proxy/fronts/http.ts).
 */
const kSettle = Symbol('ktls-sidecar.handshakeSettle');
type Pending = net.Socket & { [kSettle]?: (o: HandshakeOutcome) => void };

function takeSettle(raw: net.Socket): ((o: HandshakeOutcome) => void) | undefined {
  const settle = (raw as Pending)[kSettle];
  (raw as Pending)[kSettle] = undefined;
  return settle;
}

export class Handshaker {
  private readonly server: tls.Server;
  /** The handshake engine's own tls.Server (the engine owns its events); same options, same contexts. */
  private engineServer: tls.Server | undefined;
  private contexts: TlsContexts;
  private mtls: boolean;
  private requireClientCert: boolean;
  private readonly options: tls.TlsOptions;

  constructor(contexts: TlsContexts, settings: TlsSettings, alpn: string[], handshakeTimeoutMs: number) {
    this.contexts = contexts;
    this.mtls = settings.clientCA !== '';
    this.requireClientCert = this.mtls && settings.requestCert;
    // Built once and shared by both servers (TLSSocket fast path and the
    // handshake engine), so certificates, SNI, ALPN, mTLS and tickets can never
    // differ between the two paths.
    this.options = {
      ...TlsContexts.serverOptions(settings, alpn, handshakeTimeoutMs),
      // Every handshake starts from the default context; SNICallback switches.
      SNICallback: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => {
        cb(null, this.contexts.lookup(servername).context);
      },
    };
    this.server = tls.createServer(this.options);
    this.applyDefault(this.server);
    this.server.on('secureConnection', (socket: tls.TLSSocket) => {
      const refusal = this.checkClient(socket.authorized, Object.keys(socket.getPeerCertificate()).length > 0, socket.authorizationError);
      if (refusal) {
        this.settle(socket, { ok: false, ...refusal });
        socket.destroy();
        return;
      }
      this.settle(socket, { ok: true, tls: socket });
    });
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      this.settle(socket, { ok: false, reason: tlsErrorReason(err), error: err });
    });
  }

  get current(): TlsContexts {
    return this.contexts;
  }

  /** Swap in new contexts (hot reload) for both paths. Running handshakes finish with the old ones. */
  setContexts(contexts: TlsContexts): void {
    this.contexts = contexts;
    this.applyDefault(this.server);
    if (this.engineServer) this.applyDefault(this.engineServer);
  }

  /**
   * The mTLS policy, shared by both paths. We verify here rather than with
   * rejectUnauthorized: node would destroy the socket silently and we could
   * not say why. Optional mTLS lets a client without a certificate through,
   * never one with a bad certificate.
   */
  checkClient(authorized: boolean, presented: boolean, authorizationError: Error | string | null | undefined): MtlsRefusal {
    if (!this.mtls || authorized) return null;
    if (!this.requireClientCert && !presented) return null;
    const reason = presented ? 'client_cert_invalid' : 'client_cert_required';
    return { reason, error: new Error(authorizationError ? String(authorizationError) : reason) };
  }

  /**
   * A handshake engine on a tls.Server with exactly this handshaker's options
   * and contexts (hot reload included). One per generation; close it when the
   * generation is dropped.
   */
  createEngine(opts: { handshakeTimeoutMs: number; maxBufferedBytes: number }): HandshakeEngine {
    this.engineServer ??= tls.createServer(this.options);
    this.applyDefault(this.engineServer);
    return new HandshakeEngine(this.engineServer, opts);
  }

  /**
   * Run the handshake on `raw`. Never rejects; the caller owns the overall
   * deadline and destroys `raw` on expiry (which settles this as `reset`).
   */
  handshake(raw: net.Socket): Promise<HandshakeOutcome> {
    return new Promise((resolve) => {
      (raw as Pending)[kSettle] = resolve;
      // A socket destroyed under a running handshake (deadline, reset) settles too.
      raw.once('close', () => {
        const settle = takeSettle(raw);
        if (!settle) return;
        settle({ ok: false, reason: 'reset', error: new Error('connection closed during handshake') });
      });
      // No half-open during the handshake: a client that sends FIN mid-handshake
      // must end it now, not at the deadline. (TLSSocket copies allowHalfOpen
      // from the raw socket; settle() turns it back on for the application phase.)
      raw.allowHalfOpen = false;
      this.server.emit('connection', raw);
    });
  }

  private settle(socket: tls.TLSSocket, outcome: HandshakeOutcome): void {
    // `_parent` is the net.Socket node wrapped (set in the TLSSocket constructor
    // for net.Socket inputs); it is how a 'secureConnection' finds its accept.
    const raw = (socket as unknown as { _parent?: net.Socket })._parent;
    const resolve = raw ? takeSettle(raw) : undefined;
    if (!resolve || !raw) {
      socket.destroy();
      return;
    }
    if (outcome.ok) {
      // Half-close is part of the application protocol (TCP mode forwards it).
      raw.allowHalfOpen = true;
      outcome.tls.allowHalfOpen = true;
    }
    resolve(outcome);
  }

  private applyDefault(server: tls.Server): void {
    // The default context serves clients that send no SNI (or an unknown one
    // before SNICallback runs). setSecureContext only takes options, so the
    // server keeps its own copy of the default context in _sharedCreds.
    (server as unknown as { _sharedCreds: tls.SecureContext })._sharedCreds = this.contexts.defaultEntry.context;
  }
}

/** The fast path: Node's TLSSocket on the raw socket, labelled with the pre-handshake decision's reason. */
export async function nodeHandshake(
  gen: Generation,
  origin: ConnectionOrigin,
  reason: Exclude<KtlsReason, 'enabled'>,
  timer: { timedOut: boolean },
): Promise<Opened | Refused> {
  const { raw } = origin;
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
  let outcome: HandshakeOutcome;
  try {
    outcome = await gen.handshaker.handshake(raw);
  } finally {
    clearInterval(poll);
  }
  if (overLimit || overLimitNow()) {
    return { refusal: { kind: 'rejected', reason: 'handshake_buffer_limit' }, victim: outcome.ok ? outcome.tls : raw };
  }
  if (!outcome.ok) return { refusal: { kind: 'handshake_failure', reason: timer.timedOut ? 'timeout' : outcome.reason }, error: outcome.error };
  const tls = outcome.tls;
  tls.on('error', () => undefined); // the PlainConnection reports stream errors
  const facts = connectionFacts(origin, gen.contexts, tlsFactsOf(tls));
  return { facts, layer: userspaceRecordLayer(tls, facts, reason), kernel: false };
}
