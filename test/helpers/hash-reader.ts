// sha256 and byte count of what Node reads from a socket, for byte-exact checks
// on the host (test/unit) and in the lab (test/kernel). node: imports only.
import type net from 'node:net';
import { createHash } from 'node:crypto';

export interface HashReader {
  bytes(): number;
  /** Resolves once at least `n` bytes have been read. */
  until(n: number): Promise<void>;
  digest(): string;
}

/**
 * Adds a 'data' listener to `sock` and nothing else: a socket that was never
 * paused starts flowing, one paused with pause() stays paused until resumed.
 */
export function hashReads(sock: net.Socket): HashReader {
  const h = createHash('sha256');
  let n = 0;
  let waiter: { n: number; resolve: () => void } | null = null;
  sock.on('data', (d: Buffer) => {
    h.update(d);
    n += d.length;
    if (waiter && n >= waiter.n) {
      const w = waiter;
      waiter = null;
      w.resolve();
    }
  });
  return {
    bytes: () => n,
    until: (want) =>
      new Promise<void>((resolve) => {
        if (n >= want) resolve();
        else waiter = { n: want, resolve };
      }),
    digest: () => h.digest('hex'),
  };
}
