// The handshake engine path: offload hook → decide(); every hand-off goes to
// kernelRecordLayer() (kTLS, or the JS record layer when the decision says
// userspace). Only a connection without an exact hand-off state stays on the
// TLSSocket over the engine's Duplex: reported (engineFallback), since that
// is the path of nodejs/node#35384 (an assertion that ends the process).
import { type HandshakeEngine, MIN_BUFFERED_BYTES, type HandshakeResult } from '../handshake/engine.js';
import { tlsFactsOf } from '../handshake/facts.js';
import { HandshakeError, classifyHandshakeFailure } from '../handshake/failure.js';
import { type KtlsDecision, decide } from '../ktls/decision.js';
import type { ConnectionRefusal } from '../observe/events.js';
import type { ConnectionContext, Generation, Opened, Refused } from './accept.js';
import { type ConnectionOrigin, connectionFacts } from './facts.js';
import { wipeHandoff } from '../record-layer/install.js';
import { engineUserspaceReason, kernelRecordLayer, userspaceRecordLayer } from './record-layer.js';

/** The generation's handshake engine, on the handshaker's own options and contexts. */
function engineOf(gen: Generation): HandshakeEngine {
  const limit = gen.config.limits.maxHandshakeBufferBytes;
  // The engine needs room for two maximal records; 0 (no limit) gets a generous cap.
  gen.engine ??= gen.handshaker.createEngine({
    handshakeTimeoutMs: gen.config.timeouts.handshake,
    maxBufferedBytes: Math.max(MIN_BUFFERED_BYTES, limit > 0 ? limit : 64 * 1024 * 1024),
  });
  return gen.engine;
}

export async function engineHandshake(ctx: ConnectionContext, origin: ConnectionOrigin, draw: number, timer: { timedOut: boolean }): Promise<Opened | Refused> {
  const { raw, id } = origin;
  const { gen } = ctx;
  let decision: KtlsDecision | undefined;
  let result: HandshakeResult;
  try {
    result = await engineOf(gen).accept(raw, {
      offload: (f) =>
        (decision = decide({ flag: ctx.flag.enabled, ktls: gen.config.ktls, probe: ctx.probe, nativeAvailable: ctx.nativeAvailable, facts: f, draw }))
          .mode !== 'userspace',
      jsStreamWriteRefused: () => ctx.observer.jsStreamWriteRefused(id),
    });
  } catch (err) {
    const refusal: ConnectionRefusal = timer.timedOut
      ? { kind: 'handshake_failure', reason: 'timeout' }
      : err instanceof HandshakeError
        ? classifyHandshakeFailure(err)
        : { kind: 'handshake_failure', reason: 'internal_error' };
    return { refusal, error: refusal.kind === 'rejected' ? undefined : err };
  }

  const refusal = gen.handshaker.checkClient(result.facts.authorized, result.facts.peerCertificate !== null, result.facts.authorizationError);
  if (refusal || timer.timedOut || raw.destroyed) {
    if (result.mode === 'handoff') wipeHandoff(result);
    const reason = refusal ? refusal.reason : timer.timedOut ? 'timeout' : 'reset';
    return { refusal: { kind: 'handshake_failure', reason }, error: refusal?.error, victim: result.mode === 'handoff' ? raw : result.tlsSocket };
  }

  if (result.mode === 'userspace') {
    // No exact state to hand off (a suite the tracker cannot follow, tracking
    // out of step, OpenSSL not quiet): on doubt stay with OpenSSL, which has
    // the whole truth — over the Duplex, so report it.
    const tls = result.tlsSocket;
    tls.on('error', () => undefined); // the PlainConnection reports stream errors
    tls.allowHalfOpen = true; // half-close is part of the application protocol (tcp mode)
    const facts = connectionFacts(origin, gen.contexts, tlsFactsOf(tls));
    const reason = engineUserspaceReason(result.reason, decision, facts.tlsVersion);
    ctx.observer.engineFallback(id, { engineReason: result.reason, ktlsReason: reason, cipher: facts.cipher });
    return { facts, layer: userspaceRecordLayer(tls, facts, reason, result.reason), kernel: false };
  }

  const facts = connectionFacts(origin, gen.contexts, result.facts);
  // A userspace decision hands off too: kernelRecordLayer() keeps its keys in
  // the JS record layer. No decision at all means the hook threw (a bug).
  if (!decision || (decision.mode !== 'userspace') !== result.offload) {
    wipeHandoff(result);
    return { refusal: { kind: 'handshake_failure', reason: 'internal_error' } };
  }
  try {
    const layer = await kernelRecordLayer({
      handoff: result,
      facts,
      decision,
      native: ctx.native(),
      rekeySupported: ctx.probe?.rekey ?? false,
      rxWholeRecordPoll: ctx.probe?.rxWholeRecordPoll ?? false,
      rxExpectNoPad: gen.config.ktls.rxExpectNoPad && (ctx.probe?.rxExpectNoPad ?? false),
      keyUpdateRateLimit: gen.config.ktls.keyUpdateRateLimit,
      splice: gen.config.ktls.splice,
      events: ctx.observer.ktls(id),
      tlsStat: ctx.tlsStat,
    });
    return { facts, layer, kernel: layer.decision.mode !== 'userspace' };
  } catch (err) {
    // The connection could not go on (a key was in the kernel and the other
    // failed, or the peer closed during the install); the socket is gone.
    return { refusal: { kind: 'rejected', reason: 'other', closeReason: 'ktls_install_aborted' }, error: err };
  }
}
