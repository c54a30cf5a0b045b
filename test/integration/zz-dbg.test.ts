import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { request } from '../helpers/client.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';
const pki = makePki();
const up = await startUpstream();
const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, '--timeouts-handshake', '300ms']);
const hello: Buffer = await new Promise((resolve) => {
  const srv = net.createServer((c) => c.once('data', (d: Buffer) => { resolve(d.subarray(0, 60)); c.destroy(); srv.close(); }));
  srv.listen(0, '127.0.0.1', () => { const s = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false }); s.on('error', () => undefined); });
});
for (let round = 0; round < 6; round++) {
  const socks = Array.from({ length: 20 }, () => { const s = net.connect(sc.tlsPort, '127.0.0.1'); s.on('error', () => undefined); s.write(hello); return s; });
  const n0 = sc.logs.length;
  const rs = await Promise.allSettled(Array.from({ length: 10 }, () => request(sc.tlsPort, { ca: pki.caCert })));
  const bad = rs.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  await new Promise((r) => setTimeout(r, 400));
  if (bad.length) {
    t.comment(`round ${round}: ${bad.join(',')}`);
    t.comment(sc.logs.slice(n0).filter((l) => l.event === 'connection_closed').map((l) => `${l['close_reason']} ${l['protocol']} in=${l['bytes_in']} out=${l['bytes_out']} ${JSON.stringify(l['error'] ?? '')}`).join('\n'));
  }
  socks.forEach((s) => s.destroy());
}
await sc.stop(); await up.close(); pki.cleanup();
