// Connected loopback TCP pairs for tests that drive a stream directly (no
// listener of the sidecar).
import net from 'node:net';
import type { Teardown } from './teardown.js';

/** A connected pair, both sides half-open capable and neither paused; closed at teardown. */
export async function loopbackPair(t: Teardown): Promise<{ server: net.Socket; client: net.Socket }> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => srv.once('connection', resolve));
  const client = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((resolve) => client.once('connect', resolve));
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { server, client };
}

/**
 * [server side (paused), client side]: the server side starts paused, as the
 * handshake engine leaves a handed-off socket.
 */
export async function socketPair(t: Teardown): Promise<[net.Socket, net.Socket]> {
  const { server, client } = await loopbackPair(t);
  server.pause();
  return [server, client];
}
