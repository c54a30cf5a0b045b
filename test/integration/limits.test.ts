// Connections that never reach a front: plain HTTP and garbage on the TLS
// port, a client stalling mid-handshake, the connection limit. Each is
// counted by reason and none disturbs another connection.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());
const common = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url];
// The limit test gets its own sidecar so connections of other tests cannot count against it.
const [sc, limited, tinyBuffer, shortIdle] = await Promise.all([
  startSidecar([...common, '--timeouts-handshake', '1500ms', '--timeouts-headers', '1000ms']),
  startSidecar([...common, '--limits-max-connections', '4']),
  startSidecar([...common, '--limits-max-handshake-buffer-bytes', '64']),
  startSidecar([...common, '--timeouts-idle', '500ms']),
]);
t.teardown(() => Promise.all([sc.stop(), limited.stop(), tinyBuffer.stop(), shortIdle.stop()]));
const port = sc.tlsPort;
const ca = pki.caCert;

/** Send bytes, collect everything until the server closes. */
function raw(bytes: Buffer | string, keepOpen = false): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      if (bytes.length > 0) s.write(bytes);
      if (!keepOpen) s.end();
    });
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve({ data, closed: true }));
  });
}

/** The first bytes of a real ClientHello, captured from node's tls client. */
function clientHelloPrefix(): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = net.createServer((c) => {
      c.once('data', (d: Buffer) => {
        resolve(d.subarray(0, 40));
        c.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const s = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      s.on('error', () => undefined);
    });
  });
}

t.test('plain HTTP on the TLS port gets a 400 that says the port speaks TLS', async (t) => {
  const r = await raw('GET / HTTP/1.1\r\nHost: x\r\n\r\n', true);
  t.match(r.data, /^HTTP\/1\.1 400 /);
  t.match(r.data, /speaks TLS/);
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'plain_http' }) >= 1);
});

t.test('non-TLS garbage is closed without an answer and counted', async (t) => {
  const r = await raw(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x42, 0x42]), true);
  t.equal(r.data, '');
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'not_tls' }) >= 1);
});

t.test('a client stalling mid-handshake is closed after timeouts.handshake and counted', async (t) => {
  const r = await raw(await clientHelloPrefix(), true);
  t.ok(r.closed);
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_handshake_failures_total', { reason: 'timeout' }) >= 1);
});

t.test('a client sending nothing is closed after timeouts.handshake and counted', async (t) => {
  const r = await raw('', true);
  t.ok(r.closed);
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'handshake_timeout' }) >= 1);
});

t.test('a stalled handshake does not block other connections', async (t) => {
  const stalled = net.connect(port, '127.0.0.1');
  stalled.on('error', () => undefined);
  stalled.write(await clientHelloPrefix());
  const r = await request(port, { ca });
  t.equal(r.status, 200);
  stalled.destroy();
});

t.test('a request whose headers never complete gets 408 after timeouts.headers', async (t) => {
  const r = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(ca), servername: 'localhost' }, () => {
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
    });
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(data));
  });
  t.match(r, /^HTTP\/1\.1 408 /);
  t.ok(metricValue(await sc.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'headers_timeout' }) >= 1);
});

t.test('connections over limits.maxConnections are refused and counted; open ones keep working', async (t) => {
  const agent = new (await import('node:https')).Agent({ keepAlive: true, maxSockets: 4, ca: fs.readFileSync(ca) });
  t.teardown(() => agent.destroy());
  // Four keep-alive connections fill the limit.
  await Promise.all([0, 1, 2, 3].map(() => request(limited.tlsPort, { ca, agent, path: "/slow?ms=200" })));
  t.equal(Object.values(agent.freeSockets).flat().length, 4, 'four idle keep-alive connections');
  const before = metricValue(await limited.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'limit' });
  await t.rejects(request(limited.tlsPort, { ca }), 'fifth connection refused');
  const after = metricValue(await limited.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'limit' });
  t.equal(after, before + 1);
  const again = await request(limited.tlsPort, { ca, agent });
  t.equal(again.status, 200, 'an open connection still works');
});

t.test('a handshake flight over limits.maxHandshakeBufferBytes is refused and counted', async (t) => {
  await t.rejects(request(tinyBuffer.tlsPort, { ca }));
  t.ok(metricValue(await tinyBuffer.metrics(), 'ktls_sidecar_connections_rejected_total', { reason: 'handshake_buffer_limit' }) >= 1);
  // Regression: closing both the TLS and the raw socket once closed the fd
  // twice, which took down an unrelated listener (the admin server).
  const health = await tinyBuffer.admin('/healthz');
  t.equal(health.status, 200, 'the admin server is unaffected');
});

t.test('an idle keep-alive connection is closed after timeouts.idle and counted idle_timeout', async (t) => {
  const agent = new (await import('node:https')).Agent({ keepAlive: true, ca: fs.readFileSync(ca) });
  t.teardown(() => agent.destroy());
  const r = await request(shortIdle.tlsPort, { ca, agent });
  t.equal(r.status, 200);
  const idle = Object.values(agent.freeSockets).flat()[0];
  t.ok(idle, 'the connection is kept alive');
  await new Promise<void>((resolve) => idle?.once('close', () => resolve()));
  const line = await shortIdle.waitForLog((l) => l.event === 'connection_closed' && l['protocol'] === 'http1');
  t.equal(line['close_reason'], 'idle_timeout');
  t.ok(metricValue(await shortIdle.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'idle_timeout' }) >= 1);
});
