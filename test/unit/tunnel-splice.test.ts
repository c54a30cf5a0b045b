// A WebSocket tunnel whose owner splices upstream → client
// (proxy/upstream/tunnel.ts `splice`): the owner's starter runs once the 101
// head and the bytes read with it were handed to the client, JS never pipes
// upstream → client meanwhile, client → upstream stays piped, and the client
// closing drops the upstream socket (JS no longer reads it, so its end would
// never be seen). Here the starter moves the bytes with this host's real
// pump between plain TCP sockets; the kTLS path: sidecar-http-splice-ws.
import net from 'node:net';
import t, { type Test } from 'tap';
import { native, nativeStatus, socketFd } from '../../native/index.js';
import type { SplicePump } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import { UpstreamPool, parseTarget } from '../../proxy/upstream/pool.js';
import { Tunnel } from '../../proxy/upstream/tunnel.js';

const skip = nativeStatus().available ? false : 'native addon not built';

async function pair(t: Test): Promise<{ ours: net.Socket; peer: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const ours = await accepted;
  server.close();
  t.teardown(() => {
    ours.destroy();
    peer.destroy();
  });
  return { ours, peer };
}

const until = async (pred: () => boolean): Promise<void> => {
  for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
};

t.test('tunnel with a splice: started after the 101 head, upstream → client only through it', { skip }, async (t) => {
  let upstreamClosed = false;
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.on('close', () => (upstreamClosed = true));
    sock.once('data', () => {
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nEARLY');
      sock.on('data', (d: Buffer) => sock.write(`echo:${d.toString()}`));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const pool = new UpstreamPool(parseTarget(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`), { connectMs: 1000, responseMs: 0 });
  t.teardown(() => pool.close());
  const { ours, peer } = await pair(t);
  let got = '';
  peer.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const head = 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY';
  let seenAtStart: number | null = null;
  const run: { pump?: SplicePump } = {};
  const tunnel = new Tunnel(pool, ours, Buffer.from('HELLO'), true, {
    answered: () => undefined,
    failed: (f) => t.fail(`failed: ${f.err.message}`),
    done: () => undefined,
    splice: (upstream) => ({
      start: () => {
        // What JS had handed to the client socket by now: the head and the early bytes, all of them.
        seenAtStart = ours.bytesWritten;
        const early = stopReading(upstream);
        if (early.length > 0) ours.write(early);
        const pump = native().createSplicePump(socketFd(upstream)!, socketFd(ours)!, () => undefined);
        run.pump = pump;
        pump.start(0);
        ours.once('close', () => pump.close());
      },
    }),
  });
  tunnel.open('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  await until(() => got.includes('echo:HELLO'));
  peer.write('ping');
  await until(() => got.includes('echo:ping'));
  t.equal(seenAtStart, Buffer.byteLength(head), 'the starter ran once the 101 head and the early bytes were handed to the client');
  t.equal(got, `${head}echo:HELLOecho:ping`, 'in order: head, early bytes, then the echoes');
  t.equal(ours.bytesWritten, Buffer.byteLength(head), 'nothing after the head went through JS to the client');
  t.equal(run.pump?.moved(), 'echo:HELLOecho:ping'.length, 'the echoes went through the pump');
  run.pump?.close();
  ours.destroy();
  await until(() => upstreamClosed);
  t.ok(upstreamClosed, 'the client closing dropped the upstream socket');
});
