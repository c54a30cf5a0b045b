// A TCP test upstream: optionally parses a PROXY v2 header first, then echoes
// bytes back; on the client's FIN it sends a trailer and closes its side, so
// half-close behaviour is observable.
import net from 'node:net';
import { type ParsedProxyV2, parseProxyV2Header } from './proxy-v2.js';

export interface TcpUpstream {
  port: number;
  headers: ParsedProxyV2[];
  close(): Promise<void>;
}

export function startTcpUpstream(expectProxyHeader: boolean): Promise<TcpUpstream> {
  const headers: ParsedProxyV2[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let pending: Buffer = Buffer.alloc(0);
    let headerDone = !expectProxyHeader;
    s.on('data', (d: Buffer) => {
      if (!headerDone) {
        pending = Buffer.concat([pending, d]);
        const h = parseProxyV2Header(pending);
        if (!h) return;
        headers.push(h);
        headerDone = true;
        d = pending.subarray(h.length);
        if (d.length === 0) return;
      }
      s.write(d);
    });
    // Half-close: after the client's FIN we can still send, then we end too.
    s.on('end', () => s.end('<upstream-bye>'));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        headers,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
