// The upstream closes an idle keep-alive connection just as the sidecar
// reuses it (the upstream's keep-alive timeout racing the agent's; seen in the
// lab soak as a 502 under load). The request never reached the application:
// an idempotent request without a body is sent once more on a new connection;
// one with a body is not (the upstream may have acted on it) and gets 502.
import net from 'node:net';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';

/**
 * An upstream whose every connection answers its first request (keep-alive)
 * and then resets when a second request arrives on it: the race, made certain.
 */
async function racingUpstream(t: { teardown(fn: () => unknown): void }): Promise<{ url: string; connections: () => number }> {
  let connections = 0;
  const server = net.createServer((c) => {
    connections++;
    let requests = 0;
    let buf = '';
    c.on('error', () => undefined);
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      const cl = Number(/\r\ncontent-length:\s*(\d+)/i.exec(buf)?.[1] ?? 0);
      if (buf.length < buf.indexOf('\r\n\r\n') + 4 + cl) return;
      buf = '';
      if (++requests > 1) {
        c.resetAndDestroy();
        return;
      }
      c.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections: () => connections };
}

const pki = makePki();
t.teardown(() => pki.cleanup());

t.test('a GET on a reused connection the upstream reset is sent again on a new one: 200, no upstream error', async (t) => {
  const up = await racingUpstream(t);
  const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url]);
  t.teardown(() => sc.stop());
  t.equal((await request(sc.tlsPort, { ca: pki.caCert, path: '/one' })).status, 200, 'first request');
  const second = await request(sc.tlsPort, { ca: pki.caCert, path: '/two' });
  t.equal(second.status, 200, 'the second request, first sent on the reused connection, is answered');
  t.equal(second.body.toString(), 'ok');
  t.equal(up.connections(), 2, 'it went again on a second upstream connection');
  t.equal(metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total'), 0, 'no upstream error counted');
});

t.test('a POST with a body is not sent twice: 502, counted reset', async (t) => {
  const up = await racingUpstream(t);
  const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url]);
  t.teardown(() => sc.stop());
  t.equal((await request(sc.tlsPort, { ca: pki.caCert, path: '/one' })).status, 200, 'first request');
  const second = await request(sc.tlsPort, { ca: pki.caCert, path: '/two', method: 'POST', body: Buffer.from('pay once'), headers: { 'content-length': '8' } });
  t.equal(second.status, 502);
  t.equal(up.connections(), 1, 'not retried');
  t.equal(metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'reset' }), 1);
});
