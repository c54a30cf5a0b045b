// A connected loopback TCP pair for record-layer tests that drive a stream
// directly (no listener of the sidecar): the server side starts paused, as
// the handshake engine leaves a handed-off socket.
import net from 'node:net';

/** [server side (paused), client side], both half-open capable; closed at teardown. */
export async function socketPair(t: { teardown(fn: () => unknown): void }): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const srv = await accepted;
  srv.pause();
  t.teardown(() => {
    client.destroy();
    srv.destroy();
    server.close();
  });
  return [srv, client];
}
