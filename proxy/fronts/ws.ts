// WebSocket (and any HTTP/1.1 Upgrade) on the HTTP/1.1 front: the upgrade
// request goes to the upstream with Connection/Upgrade kept, then the two
// sockets are spliced (http-proxy-3 pipes them both ways).
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { HandshakeFacts } from '../pipeline/facts.js';
import type { Forwarder } from './forward.js';

export function attachUpgrade(
  server: http.Server,
  forwarder: Forwarder,
  factsOf: (socket: Duplex) => HandshakeFacts | undefined,
): void {
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const facts = factsOf(socket);
    if (!facts) {
      socket.destroy();
      return;
    }
    forwarder.ws(req, socket, head, facts);
  });
}
