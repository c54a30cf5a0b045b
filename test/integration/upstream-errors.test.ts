// Upstream down → 502, upstream too slow → 504: short plain bodies, counted
// by reason, and the next request on a healthy path still works.
import net from 'node:net';
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

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const certArgs = ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const [down, slow] = await Promise.all([
  startSidecar([...certArgs, '--upstream-url', `http://127.0.0.1:${await deadPort()}`]),
  startSidecar([...certArgs, '--upstream-url', up.url, '--timeouts-upstream-response', '1000ms']),
]);
t.teardown(() => Promise.all([down.stop(), slow.stop()]));

t.test('upstream down answers 502 with a short plain body, counted connect_refused', async (t) => {
  const r = await request(down.tlsPort, { ca: pki.caCert });
  t.equal(r.status, 502);
  t.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  t.match(r.body.toString(), /upstream is not reachable/);
  t.ok(metricValue(await down.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'connect_refused' }) >= 1);
});

t.test('readiness is 503 while the upstream refuses TCP', async (t) => {
  const r = await down.admin('/readyz');
  t.equal(r.status, 503);
  t.match(r.body, /"name":"upstream","ok":false/);
});

t.test('a slow upstream answers 504, counted response_timeout', async (t) => {
  const r = await request(slow.tlsPort, { ca: pki.caCert, path: '/slow?ms=5000' });
  t.equal(r.status, 504);
  t.match(r.body.toString(), /did not answer in time/);
  t.ok(metricValue(await slow.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'response_timeout' }) >= 1);
});

t.test('a fast request after a 504 is unaffected', async (t) => {
  const r = await request(slow.tlsPort, { ca: pki.caCert, path: '/slow?ms=10' });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'slow\n');
});
