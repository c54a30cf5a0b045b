// The upstream dies in the middle of a response body: the client must see the
// response cut at once (HTTP/1.1: the connection closes without the final
// chunk or short of Content-Length; HTTP/2: RST_STREAM on a session that stays
// busy), not when the idle timeout (30 s here) finally fires; and it is counted
// as an upstream error.
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import t from 'tap';
import { request } from '../helpers/client.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);

/** Well under the 30 s idle timeout: what "at once" means here (a correctness bound, not a speed check). */
const PROMPT_MS = 5000;

/**
 * A raw upstream: /cut-length and /cut-chunked send a head and 1000 bytes of a
 * longer body, then close; /reset-chunked the same, then reset; /hang never answers.
 */
function startCuttingUpstream(): Promise<{ url: string; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let head = '';
    s.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const target = head.split(' ')[1] ?? '';
      const path = target.replace('/reset-', '/cut-');
      head = '';
      const part = Buffer.alloc(1000, 0x61);
      if (path === '/cut-length') s.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n'), part]));
      else if (path === '/cut-chunked') s.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n'), part, Buffer.from('\r\n')]));
      else return; // /hang
      // A clean FIN, as when the upstream process exits: no socket error,
      // only an early end. /reset-* sends a TCP RST instead (a socket error).
      setTimeout(() => (target === path ? s.destroy() : s.resetAndDestroy()), 100);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      });
    });
  });
}

const up = await startCuttingUpstream();
t.teardown(() => up.close());
const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, '--timeouts-idle', '30s']);
t.teardown(() => sc.stop());

const resets = async (): Promise<number> => metricValue(await sc.metrics(), 'ktls_sidecar_upstream_errors_total', { reason: 'reset' });

for (const path of ['/cut-length', '/cut-chunked', '/reset-chunked']) {
  t.test(`HTTP/1.1: ${path} cut by the upstream is cut toward the client at once and counted`, async (t) => {
    const before = await resets();
    const started = performance.now();
    await t.rejects(request(sc.tlsPort, { ca: pki.caCert, path }), 'the client sees an incomplete response');
    t.ok(performance.now() - started < PROMPT_MS, 'cut well before the idle timeout');
    t.equal(await resets(), before + 1, 'counted once as upstream error reset');
  });

  t.test(`HTTP/2: ${path} cut by the upstream resets the stream at once, the busy session lives on`, async (t) => {
    const client = http2.connect(`https://localhost:${sc.tlsPort}`, { ca });
    t.teardown(() => client.destroy());
    client.on('error', () => undefined);
    // A stream that never ends keeps the session busy (no idle timeout).
    const hang = client.request({ ':path': '/hang' });
    hang.on('error', () => undefined);
    const before = await resets();
    const started = performance.now();
    const got = await new Promise<{ rstCode: number | undefined; bytes: number }>((resolve) => {
      const req = client.request({ ':path': path });
      let bytes = 0;
      req.on('data', (d: Buffer) => (bytes += d.length));
      req.on('error', () => undefined);
      req.on('close', () => resolve({ rstCode: req.rstCode, bytes }));
      req.end();
    });
    t.ok(performance.now() - started < PROMPT_MS, 'reset well before the idle timeout');
    t.equal(got.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, 'RST_STREAM INTERNAL_ERROR');
    t.ok(got.bytes < 100_000, 'the body is incomplete');
    t.notOk(client.destroyed, 'the session is still open');
    t.equal(await resets(), before + 1, 'counted once as upstream error reset');
  });
}
