// Node's C++ stream consumers over a JS stream — TLS over the engine's
// Duplex, and HTTP/2 over the PlainConnection every front gets (node:http2
// wraps any non-native stream the same way) — go through JSStreamSocket, whose
// doWrite asserts when the C++ side writes while a shutdown of that stream is
// pending: ERR_INTERNAL_ASSERTION, thrown into the C++ caller, which makes it
// an uncaught exception that ends the process (nodejs/node#35384). On this
// host it is reproduced by slow-reading HTTP/2 clients that abort mid-body
// (test/integration/engine-userspace-load.test.ts); the assertion fired in the
// HTTP/2 front's wrapper, over a connection on the engine's Duplex.
//
// The assertion is doWrite's first statement, before it changes any state, so
// it can be turned into what it should have been: a failed write (EPIPE). The
// C++ writer sees the write fail and ends that one connection with an error.
//
// This reaches into Node internals (a JSStreamSocket's `doWrite`, which the
// native JSStream calls as a method of its owner; a TLS socket's
// `_handle._parentWrap`). Where they are not as expected the guard does
// nothing and says so (returns false); the serve command's crash guard
// (proxy/crash-guard.ts) remains the last resort.

import { constants } from 'node:os';
import type tls from 'node:tls';

interface JsStreamSocketLike {
  doWrite?: (req: unknown, bufs: unknown) => number;
}

const UV_EPIPE = -constants.errno.EPIPE;
const guarded = new WeakSet<object>();

/**
 * Make a JSStreamSocket (or a proxy that forwards property reads and writes
 * to one, like an Http2Session's `socket`) fail a write it cannot take
 * instead of throwing. `onRefused` is called for each such write. Idempotent;
 * false when `wrapper` has no doWrite to guard.
 */
export function guardJsStreamSocket(wrapper: unknown, onRefused: () => void): boolean {
  if (wrapper === null || typeof wrapper !== 'object') return false;
  const w = wrapper as JsStreamSocketLike;
  const original = w.doWrite;
  if (typeof original !== 'function') return false;
  if (guarded.has(original)) return true;
  const guardedDoWrite = function (this: JsStreamSocketLike, req: unknown, bufs: unknown): number {
    try {
      return original.call(this, req, bufs);
    } catch (err) {
      if (!(err instanceof Error) || (err as { code?: unknown }).code !== 'ERR_INTERNAL_ASSERTION') throw err;
      try {
        onRefused();
      } catch {
        // reporting must not turn the refused write back into a throw
      }
      return UV_EPIPE;
    }
  };
  guarded.add(guardedDoWrite);
  w.doWrite = guardedDoWrite;
  return true;
}

/** The same for the JS stream a TLS socket was built on (none when it sits on a native socket). */
export function guardTlsOverJsStream(socket: tls.TLSSocket, onRefused: () => void): boolean {
  const wrap = (socket as unknown as { _handle?: { _parentWrap?: unknown } | null })._handle?._parentWrap;
  return guardJsStreamSocket(wrap, onRefused);
}
