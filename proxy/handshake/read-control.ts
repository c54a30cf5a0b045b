// Stopping and restarting libuv's reads on an accepted net.Socket.
//
// Why this exists: at hand-off the engine must know every ciphertext byte
// already read from the fd, because the kernel (TLS_RX) can only start at a
// byte the process has not read yet. `socket.pause()` is not enough: for
// sockets not created with `onread`, Node keeps reading into the stream
// buffer until it reaches its highWaterMark, and reading from the stream
// (`socket.read()`) calls readStart() again. Node has no public API to stop
// the fd reads, so this module — and only this module — touches the internal
// `socket._handle` (TCPWrap: `readStop()`, and the `reading` flag that
// net.Socket._read() checks before calling readStart()). If the internals are
// missing, `canControlReading()` is false and the engine keeps the
// connection in userspace (reason `read_stop_unavailable`) instead of guessing.

import type net from 'node:net';

interface InternalHandle {
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}

const stopped = new WeakSet<net.Socket>();

function handleOf(socket: net.Socket): InternalHandle | null {
  // Internal, see the module comment. Typed narrowly instead of `any`.
  const h = (socket as unknown as { _handle?: InternalHandle | null })._handle;
  return h && typeof h === 'object' ? h : null;
}

/** True when this Node version exposes what stopReading() needs. */
export function canControlReading(socket: net.Socket): boolean {
  const h = handleOf(socket);
  return !!h && typeof h.readStop === 'function' && typeof h.readStart === 'function' && 'reading' in h;
}

/**
 * Stop reading from the fd now and return every byte Node has read but not
 * yet delivered (the stream buffer), in order. Afterwards the socket is
 * paused, libuv does not read, and `socket.read()`/`resume()` will not
 * restart reads until resumeReading() is called. Never loses or duplicates
 * bytes: what libuv read before readStop() is in the stream buffer, which is
 * drained here.
 */
export function stopReading(socket: net.Socket): Buffer {
  socket.pause();
  const h = handleOf(socket);
  if (!h || typeof h.readStop !== 'function') throw new Error('socket handle cannot stop reading');
  if (h.reading) h.readStop();
  stopped.add(socket);
  // Pretend reads are on, so Readable.read() → net.Socket._read() does not readStart().
  h.reading = true;
  const chunks: Buffer[] = [];
  for (let c: unknown; (c = socket.read()) !== null;) {
    if (Buffer.isBuffer(c)) chunks.push(c);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

/** True while stopReading() holds the socket: libuv does not read its fd, so someone else may. */
export function readsStopped(socket: net.Socket): boolean {
  return stopped.has(socket);
}

/**
 * Undo stopReading(): start reading from the fd again and resume the
 * stream. Attach the 'data' listener first. A no-op restart for sockets
 * stopReading() did not stop (their reads were never stopped).
 */
export function resumeReading(socket: net.Socket): void {
  const h = handleOf(socket);
  if (h && stopped.has(socket) && !socket.destroyed) {
    stopped.delete(socket);
    // What net.Socket's own tryReadStart() does. Calling it directly is
    // needed because the drain in stopReading() left the Readable's own
    // "read in progress" flag set, so resume() alone would never call _read().
    h.reading = true;
    const err = h.readStart?.() ?? 0;
    if (err) socket.destroy(new Error(`readStart failed (${err})`));
  }
  socket.resume();
}
