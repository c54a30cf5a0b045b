// A client whose FIN arrives together with its data, on the host and in the
// lab (test/integration and test/kernel ktls-early-fin): a relay that holds
// client bytes until the client's FIN, and a TLS client that sends and
// half-closes at once. (Also compiled for the lab VM: node: imports only.)
import net from 'node:net';
import tls from 'node:tls';
import type { Teardown } from './teardown.js';

/**
 * A TCP relay to `port`: the client's first flight goes through at once; once
 * the server has answered, client bytes are held until the client's FIN and
 * then written in one go, followed by FIN. Server bytes always flow.
 */
export async function startHoldingRelay(t: Teardown, port: number): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const up = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    sockets.add(client).add(up);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    let serverSpoke = false;
    const held: Buffer[] = [];
    up.on('data', (d: Buffer) => {
      serverSpoke = true;
      client.write(d);
    });
    up.on('end', () => client.end());
    client.on('data', (d: Buffer) => {
      if (serverSpoke) held.push(d);
      else up.write(d);
    });
    client.on('end', () => up.end(Buffer.concat(held)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

/** tls.connect honours allowHalfOpen (passed to the TLSSocket) though @types/node omits it. */
type HalfOpenOptions = tls.ConnectionOptions & { allowHalfOpen: boolean };

/**
 * TLS to 127.0.0.1:`port` (as localhost, verified with `ca`): on secureConnect
 * write `data` and half-close; resolves with everything received until close.
 */
export function sendAndHalfClose(port: number, ca: Buffer, data: Buffer, opts: tls.ConnectionOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const options: HalfOpenOptions = { host: '127.0.0.1', port, ca, servername: 'localhost', allowHalfOpen: true, ...opts };
    const s = tls.connect(options, () => s.end(data));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
}
