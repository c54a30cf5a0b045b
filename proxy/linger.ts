// Letting a client connection go without a reset: after our FIN, keep reading
// (and dropping) what the client still sends until it closes its side, or
// LINGER_MS passes, then destroy. Destroying at once would close a TCP socket
// with unread input, which the kernel answers with a reset that can overtake
// our last bytes in the client's receive path (the "reset instead of 431").
import type { Duplex } from 'node:stream';

/** How long a connection we ended keeps reading (and discarding) before it is destroyed. */
export const LINGER_MS = 2000;

/**
 * Destroy `socket` once the client closed its side (and our end is
 * flushed), or after LINGER_MS. The caller has ended the socket, or is about
 * to, and keeps it read: node:http's own 'data' listener, or resume() — a
 * paused stream never sees the client's FIN.
 */
export function lingerThenDestroy(socket: Duplex): void {
  // The one bound of the linger, the wait for our answer to flush included
  // (a write can stall for good on a broken TLS session).
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  const done = (): void => {
    // The client's FIN may come before our answer is flushed: let the answer out first.
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  };
  socket.once('close', () => clearTimeout(timer));
  if (socket.readableEnded) done();
  else socket.once('end', done);
}
