// The TLS handshake step. Accepted sockets are handed to a tls.Server that
// never listens (`emit('connection', raw)`): node's TLS stack does the
// handshake over the socket we own, and we get the resulting TLSSocket back
// in 'secureConnection' / the failure in 'tlsClientError'.
import { createHash } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { TlsContexts, type TlsSettings } from '../tls/context.js';
import type { HandshakeFailureReason } from '../vocabulary.js';
import { HandshakeEngine } from '../handshake/engine.js';
import type { ClientIdentity } from './facts.js';

export type HandshakeFailure = HandshakeFailureReason;

export type HandshakeOutcome =
  | { ok: true; tls: tls.TLSSocket }
  | { ok: false; reason: HandshakeFailure; error: Error };

interface Pending {
  resolve: (o: HandshakeOutcome) => void;
}

/**
 * OpenSSL's reason for a failed server handshake (Node's `ERR_SSL_<REASON>`)
 * as a metric reason. Anything not named here is OpenSSL refusing the bytes
 * the client sent (unexpected message, length mismatch, packet length too
 * long, bad extension, …): a malformed handshake, `protocol_error`.
 */
function classifyOpensslReason(reason: string): HandshakeFailure {
  if (reason === 'PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'client_cert_required';
  if (reason === 'NO_APPLICATION_PROTOCOL') return 'no_application_protocol';
  // A record header whose version is not 3.x (a 0x16 byte followed by garbage),
  // not a version the client asked for: the sniff already saw a TLS record type.
  if (reason === 'WRONG_VERSION_NUMBER') return 'protocol_error';
  if (/UNSUPPORTED_PROTOCOL|VERSION|INAPPROPRIATE_FALLBACK/.test(reason)) return 'protocol_version';
  if (/NO_SHARED_CIPHER|NO_SUITABLE|NO_CIPHERS/.test(reason)) return 'no_shared_cipher';
  if (/ALERT/.test(reason)) return 'peer_alert';
  if (/CERT/.test(reason)) return 'client_cert_invalid';
  if (/INTERNAL_ERROR|MALLOC_FAILURE/.test(reason)) return 'internal_error';
  return 'protocol_error';
}

/** Map an OpenSSL/Node handshake error to a stable, low-cardinality reason. */
export function classifyHandshakeError(err: Error): HandshakeFailure {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const msg = `${code} ${err.message}`;
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code === 'ECONNRESET' || /socket disconnected|ECONNRESET|EPIPE/.test(msg)) return 'reset';
  // By code, not message: OpenSSL's message names the failing function too
  // (`tls_parse_ctos_supported_versions: bad extension` is not a version failure).
  if (code.startsWith('ERR_SSL_')) return classifyOpensslReason(code.slice('ERR_SSL_'.length));
  if (/peer did not return a certificate/i.test(msg)) return 'client_cert_required';
  if (/no application protocol/i.test(msg)) return 'no_application_protocol';
  if (/unsupported protocol|version too low/i.test(msg)) return 'protocol_version';
  if (/no shared cipher/i.test(msg)) return 'no_shared_cipher';
  if (/alert/i.test(msg)) return 'peer_alert';
  if (/certificate/i.test(msg)) return 'client_cert_invalid';
  return 'other';
}

/** The values of one kind of subjectAltName entry (`URI:`, `DNS:`) in Node's `a:b, c:d` rendering. */
export function sanEntries(san: string, prefix: string): string[] {
  return san
    .split(/,\s*/)
    .filter((s) => s.startsWith(prefix))
    .map((s) => s.slice(prefix.length));
}

/** The peer certificate of a verified mTLS connection, or undefined. */
export function clientIdentity(socket: tls.TLSSocket): ClientIdentity | undefined {
  if (!socket.authorized) return undefined;
  const peer = socket.getPeerX509Certificate();
  if (!peer) return undefined;
  const san = peer.subjectAltName ?? '';
  return {
    subject: peer.subject.split('\n').join(','),
    hash: createHash('sha256').update(peer.raw).digest('hex'),
    uris: sanEntries(san, 'URI:'),
    dns: sanEntries(san, 'DNS:'),
  };
}

/** What the mTLS policy says about a finished handshake: null = let it through. */
export type MtlsRefusal = { reason: 'client_cert_required' | 'client_cert_invalid'; error: Error } | null;

export class Handshaker {
  private readonly server: tls.Server;
  /** The handshake engine's own tls.Server (the engine owns its events); same options, same contexts. */
  private engineServer: tls.Server | undefined;
  private contexts: TlsContexts;
  private readonly pending = new WeakMap<net.Socket, Pending>();
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
      this.settle(socket, { ok: false, reason: classifyHandshakeError(err), error: err });
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
      this.pending.set(raw, { resolve });
      // A socket destroyed under a running handshake (deadline, reset) settles too.
      raw.once('close', () => {
        const p = this.pending.get(raw);
        if (!p) return;
        this.pending.delete(raw);
        p.resolve({ ok: false, reason: 'reset', error: new Error('connection closed during handshake') });
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
    const p = raw ? this.pending.get(raw) : undefined;
    if (!p || !raw) {
      socket.destroy();
      return;
    }
    this.pending.delete(raw);
    if (outcome.ok) {
      // Half-close is part of the application protocol (TCP mode forwards it).
      raw.allowHalfOpen = true;
      outcome.tls.allowHalfOpen = true;
    }
    p.resolve(outcome);
  }

  private applyDefault(server: tls.Server): void {
    // The default context serves clients that send no SNI (or an unknown one
    // before SNICallback runs). setSecureContext only takes options, so the
    // server keeps its own copy of the default context in _sharedCreds.
    (server as unknown as { _sharedCreds: tls.SecureContext })._sharedCreds = this.contexts.defaultEntry.context;
  }
}
