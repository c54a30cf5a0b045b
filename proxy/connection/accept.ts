// A connection's whole story, top to bottom (after the listener admitted it,
// proxy/server.ts):
//   deadline → sniff → preHandshake()
//     ├─ kTLS impossible: Node's TLSSocket on the raw socket (node-handshake.ts)
//     └─ else: the handshake engine, offload hook = decide() (engine-handshake.ts)
//   → record layer (record-layer.ts: Node's TLS, kTLS, or the JS record layer)
//   → plaintext connection, drain registration → front (openConnection)
// Every way out before the front is one refuse(): the observers count it and
// write its close line (proxy/observe/), then the socket goes.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.js';
import type { HandshakeEngine } from '../handshake/engine.js';
import { preHandshake } from '../ktls/decision.js';
import type { DrainProtocol, KtlsConnectionRegistry, KtlsDrainTarget } from '../ktls/drain.js';
import type { KtlsFlag } from '../ktls/flag.js';
import type { KernelProbe } from '../ktls/probe.js';
import type { TlsStat } from '../ktls/tls-stat.js';
import type { ConnectionObserver, ConnectionRefusal, RefusedConnection } from '../observe/events.js';
import type { TlsContexts } from '../tls/context.js';
import type { KtlsReason } from '../vocabulary.js';
import type { KtlsNative } from '../../native/index.js';
import { engineHandshake } from './engine-handshake.js';
import type { ConnectionFacts, ConnectionOrigin } from './facts.js';
import { type Handshaker, nodeHandshake } from './node-handshake.js';
import { plaintextOf } from './plain-connection.js';
import { closeReasonOf, markClose } from '../plaintext-socket.js';
import type { RecordLayer } from './record-layer.js';
import { plainHttpResponse, sniff } from './sniff.js';

/** What the connection path needs of a front (proxy/fronts/). */

/** A client's TCP reset as its socket reports it (read ECONNRESET, write EPIPE): the client's end, not our error. */
function isPeerReset(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

export interface Front {
  handle(conn: Duplex, facts: ConnectionFacts): unknown;
  /** The connection's kTLS drain hook (HTTP/1.1: Connection: close; h2: GOAWAY; tcp/WebSocket: end our side). */
  drainTarget(conn: Duplex, protocol: DrainProtocol): KtlsDrainTarget;
}

/** Everything one config needs; a reload makes a new one while open connections finish on theirs. */
export interface Generation {
  readonly config: Config;
  /** Replaced by a certificate reload. */
  readonly contexts: TlsContexts;
  readonly handshaker: Handshaker;
  /** The handshake engine of this generation, made on first use (only kTLS-capable hosts need it). */
  engine: HandshakeEngine | undefined;
  readonly front: Front;
}

/** What a connection needs from the sidecar: its generation and the process-wide kTLS facts. */
export interface ConnectionContext {
  readonly gen: Generation;
  readonly flag: KtlsFlag;
  /** The startup kernel probe; null: a kernel without TLS. */
  readonly probe: KernelProbe | null;
  readonly nativeAvailable: boolean;
  readonly native: () => KtlsNative;
  /** Reads /proc/net/tls_stat around installs when a NIC may take TLS; null: always software kTLS. */
  readonly tlsStat: (() => TlsStat | null) | null;
  readonly observer: ConnectionObserver;
  /** Open connections by raw socket, with their plaintext stream once they have one (shutdown closes those). */
  readonly open: Map<net.Socket, Duplex | undefined>;
  /** kTLS connections, so the flag turning off reaches them. */
  readonly ktlsConns: KtlsConnectionRegistry;
}

/** A connection past its handshake with a record layer chosen. */
export interface Opened {
  facts: ConnectionFacts;
  layer: RecordLayer;
  /** At least TX is in the kernel (tracked for drain). */
  kernel: boolean;
}

/** A step that ends the connection: what observers count and log, and what goes. */
export interface Refused {
  refusal: ConnectionRefusal;
  error?: unknown;
  /**
   * What to destroy: the raw socket by default; the TLSSocket once a
   * handshake completed (it closes the raw socket itself: destroying both
   * would close the fd twice); null when the step already answered.
   */
  victim?: Duplex | null;
}

/** The one way out before the front. */
export function refuse(observer: ConnectionObserver, raw: net.Socket, conn: RefusedConnection, r: Refused): void {
  observer.refused(conn, r.refusal, r.error);
  const victim = r.victim === undefined ? raw : r.victim;
  if (victim && !victim.destroyed) victim.destroy();
}

export async function serveConnection(origin: ConnectionOrigin, ctx: ConnectionContext): Promise<void> {
  const { raw } = origin;
  const { config } = ctx.gen;
  const timer = { timedOut: false };
  const deadline = setTimeout(() => {
    timer.timedOut = true;
    raw.destroy();
  }, config.timeouts.handshake);

  const verdict = await sniff(raw);
  if (verdict !== 'tls') {
    clearTimeout(deadline);
    if (verdict === 'closed') {
      // Nothing sent: a TCP health check or port scan (or our own deadline). The
      // listener is allowHalfOpen: after the client's FIN the socket stays open
      // (CLOSE-WAIT, holding its slot and fd) until we close our side.
      return refuse(ctx.observer, raw, origin, { refusal: { kind: 'rejected', reason: timer.timedOut ? 'handshake_timeout' : 'no_data' } });
    }
    if (verdict === 'garbage') return refuse(ctx.observer, raw, origin, { refusal: { kind: 'rejected', reason: 'not_tls' } });
    refuse(ctx.observer, raw, origin, { refusal: { kind: 'rejected', reason: 'plain_http' }, victim: null });
    raw.end(plainHttpResponse());
    // Do not wait for the client's FIN forever.
    setTimeout(() => raw.destroy(), 2000).unref();
    return;
  }

  // docs/ktls.md §7: one draw per connection, used by both halves of the
  // decision. When kTLS is impossible whatever the handshake says, Node's
  // TLSSocket on the raw socket is the (faster) way; otherwise the handshake
  // engine, which can hand the record layer to the kernel.
  const draw = Math.random();
  const pre = preHandshake({ flag: ctx.flag.enabled, ktls: config.ktls, probe: ctx.probe, nativeAvailable: ctx.nativeAvailable, draw });
  let step: Opened | Refused;
  try {
    step = pre.engine
      ? await engineHandshake(ctx, origin, draw, timer)
      : await nodeHandshake(ctx.gen, origin, pre.decision.reason as Exclude<KtlsReason, 'enabled'>, timer);
  } catch (err) {
    // Both paths report their outcome right before they return, so one that
    // threw (a bug) reported nothing: report it here, or accepted would no
    // longer equal rejected + handshake failures + opened.
    step = { refusal: { kind: 'handshake_failure', reason: 'internal_error' }, error: err };
  } finally {
    clearTimeout(deadline);
  }
  if ('refusal' in step) refuse(ctx.observer, raw, origin, step);
  else openConnection(ctx, origin, step);
}

/** Past the handshake: the plaintext connection, its observers, drain registration, the front. */
function openConnection(ctx: ConnectionContext, origin: ConnectionOrigin, { facts, layer, kernel }: Opened): void {
  const { raw } = origin;
  const { front, config } = ctx.gen;
  const protocol = config.mode === 'tcp' ? 'tcp' : facts.alpn === 'h2' ? 'h2' : 'http1';
  facts.ktls = layer.labels.ktls;
  const { stream: conn, bytes } = plaintextOf(layer.stream, facts);
  const span = ctx.observer.opened({
    id: origin.id,
    remoteAddress: origin.remoteAddress,
    remotePort: origin.remotePort,
    acceptedAt: origin.acceptedAt,
    servername: facts.servername,
    alpn: facts.alpn,
    tlsVersion: facts.tlsVersion,
    cipher: facts.cipher,
    labels: { ...layer.labels, protocol },
    bytes,
  });
  if (raw.destroyed) conn.destroy();
  else ctx.open.set(raw, conn);
  // Every kTLS connection is tracked, so the flag turning off reaches it.
  if (kernel && !conn.destroyed) ctx.ktlsConns.track(conn, front.drainTarget(conn, protocol));
  let error: unknown;
  conn.on('error', (err) => {
    error = err;
    markClose(conn, isPeerReset(err) ? 'client_reset' : 'error');
  });
  conn.once('close', () => {
    span.closed?.({
      reason: closeReasonOf(conn) ?? (error ? 'error' : 'client_close'),
      error,
      bytesIn: bytes.bytesIn,
      bytesOut: bytes.bytesOut,
      closeInfo: layer.closeInfo(),
    });
    // The plaintext stream is gone: make sure the TCP socket goes with it.
    if (!raw.destroyed) raw.destroy();
  });
  if (!conn.destroyed) front.handle(conn, facts);
}
