// A WebSocket tunnel the upstream ends (its close handshake done): the
// client's connection must end and be released, not left open. Once the
// upstream socket closed, the client is unpiped, and a paused stream never
// sees the client's FIN: the tunnel ends our side and reads on, dropping,
// until that FIN, or destroys after the linger (proxy/linger.ts) when the
// client never sends one. Both as the fronts get a connection: a plain socket
// (as Node's TLSSocket) and the record layer itself, whose EOF is its
// reader's (here with the kernel played on loopback TCP: plain-kernel.ts).
import net from 'node:net';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { nativeStatus } from '../../native/index.js';
import { UpstreamPool, parseTarget } from '../../proxy/upstream/pool.js';
import { Tunnel } from '../../proxy/upstream/tunnel.js';
import { plainKernelStream } from '../helpers/plain-kernel.js';
import { loopbackPair } from '../helpers/socket-pair.js';

/** An upstream that switches, echoes, and on `bye` answers `ack` and closes (what a WebSocket server does after the close handshake). */
async function switchingUpstream(t: Test): Promise<UpstreamPool> {
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => {
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      sock.on('data', (d: Buffer) => {
        if (d.toString().includes('bye')) sock.end('ack');
        else sock.write(`echo:${d.toString()}`);
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const pool = new UpstreamPool(parseTarget(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`), { connectMs: 1000, responseMs: 0 });
  t.teardown(() => pool.close());
  return pool;
}

interface Ending {
  /** The client connection closed: whether it saw the client's end first (else the linger cut it). */
  closed: Promise<{ sawEnd: boolean }>;
}

async function tunnelThenBye(t: Test, pool: UpstreamPool, ours: Duplex, peer: net.Socket, peerCloses: boolean): Promise<Ending> {
  let got = '';
  peer.on('data', (d: Buffer) => (got += d.toString('latin1')));
  peer.on('error', () => undefined);
  const closed = new Promise<{ sawEnd: boolean }>((resolve) => ours.once('close', () => resolve({ sawEnd: ours.readableEnded })));
  const tunnel = new Tunnel(pool, ours, Buffer.alloc(0), true, {
    answered: () => undefined,
    failed: (f) => t.fail(`failed: ${f.err.message}`),
    done: () => undefined,
  });
  tunnel.open('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  await until(() => got.includes('\r\n\r\n'));
  peer.write('ping');
  await until(() => got.includes('echo:ping'));
  // The peer ends as a WebSocket client does: once it has the answer and our end.
  peer.once('end', () => {
    if (peerCloses) peer.end();
  });
  peer.write('bye');
  return { closed };
}

const until = async (pred: () => boolean): Promise<void> => {
  for (let i = 0; i < 300 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
};

/** Resolves with the close, or with null after `ms` (a connection left open). */
const within = <T>(p: Promise<T>, ms: number): Promise<T | null> =>
  Promise.race([p, new Promise<null>((r) => setTimeout(() => r(null), ms).unref())]);

const kinds: Array<{ name: string; skip: string | false; wrap: (s: net.Socket) => Duplex }> = [
  { name: 'plain socket', skip: false, wrap: (s) => s },
  { name: 'record layer (kernel played on TCP)', skip: nativeStatus().available ? false : 'native addon not built', wrap: (s) => plainKernelStream(s) },
];

for (const kind of kinds) {
  t.test(`${kind.name}: the upstream closes, the client answers with its FIN: the connection ends on it`, { skip: kind.skip }, async (t) => {
    const pool = await switchingUpstream(t);
    const { server, client } = await loopbackPair(t);
    const ours = kind.wrap(server);
    const { closed } = await tunnelThenBye(t, pool, ours, client, true);
    const end = await within(closed, 10_000);
    t.ok(end, 'the client connection closed (not left open)');
    t.equal(end?.sawEnd, true, 'after reading the client\'s FIN, not cut by the linger');
  });

  t.test(`${kind.name}: the upstream closes, the client never ends: released after the linger`, { skip: kind.skip }, async (t) => {
    const pool = await switchingUpstream(t);
    const { server, client } = await loopbackPair(t);
    const ours = kind.wrap(server);
    const { closed } = await tunnelThenBye(t, pool, ours, client, false);
    const end = await within(closed, 10_000);
    t.ok(end, 'the client connection closed (not left open)');
    t.equal(end?.sawEnd, false, 'no FIN came: the linger cut it');
  });
}
