// A client that resets its connection (TCP RST) after its exchange, as curl over
// HTTP/2 often does at exit, ends with close_reason `client_reset`: counted under
// that reason, not `error`, and not logged under log.connections=errors (the
// default), since it is the client's way of closing, not a failure of ours.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const up = await startUpstream();
t.teardown(() => up.close());
const ca = fs.readFileSync(pki.caCert);

/** One keep-alive HTTP/1.1 request answered in full, then a TCP RST (SO_LINGER 0) instead of a FIN. */
async function requestThenReset(port: number, alpn: string[]): Promise<string> {
  // TLS over our own TCP socket: only a net.Socket can resetAndDestroy() (a TLSSocket's handle cannot).
  const raw = net.connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
  const sock = tls.connect({ socket: raw, servername: 'localhost', ca, ALPNProtocols: alpn });
  await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
  sock.write('GET /reset-me HTTP/1.1\r\nhost: localhost\r\n\r\n');
  let got = '';
  await new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const head = got.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(got)?.[1];
      if (head >= 0 && len !== undefined && got.length >= head + 4 + Number(len)) resolve();
    });
    sock.once('error', reject);
  });
  raw.resetAndDestroy();
  return got.slice(0, got.indexOf('\r\n'));
}

for (const setting of ['all', 'errors'] as const) {
  t.test(`a client's RST after its response is client_reset (log.connections ${setting})`, async (t) => {
    const sc = await startSidecar(
      ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url],
      { KTLS_SIDECAR_LOG_CONNECTIONS: setting },
    );
    t.teardown(() => sc.stop());
    t.equal(await requestThenReset(sc.tlsPort, ['http/1.1']), 'HTTP/1.1 200 OK', 'the response came in full first');
    let closed = 0;
    for (let i = 0; i < 200 && closed < 1; i++) {
      closed = metricValue(await sc.metrics(), 'ktls_sidecar_connections_closed_total', { reason: 'client_reset' });
      if (closed < 1) await new Promise((r) => setTimeout(r, 25));
    }
    const metrics = await sc.metrics();
    t.equal(closed, 1, 'counted as client_reset');
    t.equal(metricValue(metrics, 'ktls_sidecar_connections_closed_total', { reason: 'error' }), 0, 'not as error');
    if (setting === 'all') {
      // Log lines go out in batches: wait for it rather than read what arrived so far.
      const line = await sc.waitForLog((l) => l.event === 'connection_closed');
      t.equal(line['close_reason'], 'client_reset');
      t.match(line['err'], { code: 'ECONNRESET' }, 'the reset itself is in the line');
    }
    t.equal(await sc.stop(), 0, 'the sidecar stops cleanly');
    // Stopping flushed stdout: every line is in by now.
    const lines = sc.logs.filter((l) => l.event === 'connection_closed');
    t.equal(lines.length, setting === 'all' ? 1 : 0, setting === 'all' ? 'one close line' : 'not a failure: no close line under errors');
  });
}
