// The real sidecar on kTLS for the other fronts: HTTP/2 (node http2 client,
// concurrent streams), WebSocket (ws client, text + binary echo) and TCP mode
// (byte-exact echo, half-close), each checked to be on a ktls="on" connection.
import t from 'tap';
import http2 from 'node:http2';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { patternBytes, sha256, startUpstream } from '../helpers/upstream.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { labPki, labSkip, startLabSidecar } from './helpers/sidecar-lab.js';

t.test('fronts over kTLS', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const ca = readFileSync(labPki().caCert);
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, { upstream: { url: upstream.url }, ktls: { enabled: true, direction: 'txrx' } });

  await t.test('HTTP/2: concurrent streams byte-exact on a kTLS connection', async (t) => {
    const before = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', protocol: 'h2' });
    const session = http2.connect(`https://127.0.0.1:${sc.tlsPort}`, { ca });
    session.on('error', () => undefined);
    t.teardown(() => session.destroy());
    const sizes = [0, 1024, 1024 * 1024];
    const bodies = await Promise.all(
      sizes.map(
        (n) =>
          new Promise<Buffer>((resolve, reject) => {
            const req = session.request({ ':path': `/bytes?n=${n}` });
            const chunks: Buffer[] = [];
            req.on('data', (d: Buffer) => chunks.push(d));
            req.on('end', () => resolve(Buffer.concat(chunks)));
            req.on('error', reject);
            req.end();
          }),
      ),
    );
    sizes.forEach((n, i) => t.equal(sha256(bodies[i] ?? Buffer.alloc(0)), sha256(patternBytes(n, 7)), `${n} B stream byte-exact`));
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', protocol: 'h2' })) - before, 1, 'one h2 connection on kTLS');
    session.close();
  });

  await t.test('WebSocket: text and binary echo on a kTLS connection', async (t) => {
    const before = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', protocol: 'http1' });
    const ws = new WebSocket(`wss://127.0.0.1:${sc.tlsPort}/`, { ca });
    ws.on('error', () => undefined);
    t.teardown(() => ws.terminate());
    await once(ws, 'open');
    ws.send('hello');
    const [text] = (await once(ws, 'message')) as [Buffer];
    t.equal(text.toString(), 'echo:hello');
    const bin = patternBytes(256 * 1024, 9);
    ws.send(bin);
    const [back] = (await once(ws, 'message')) as [Buffer];
    t.equal(sha256(back), sha256(bin), '256 KiB binary echo byte-exact');
    t.equal((await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', protocol: 'http1' })) - before, 1, 'on kTLS');
    ws.close();
    await once(ws, 'close');
  });

  await t.test('TCP mode: byte-exact echo and half-close over kTLS', async (t) => {
    const tcpUp = await startTcpUpstream(false);
    t.teardown(() => tcpUp.close());
    const tcp = await startLabSidecar(t, { mode: 'tcp', upstream: { address: `127.0.0.1:${tcpUp.port}` }, ktls: { enabled: true, direction: 'txrx' } });
    const data = patternBytes(1024 * 1024, 13);
    // allowHalfOpen reaches the TLSSocket (tls.ConnectionOptions does not declare it): we read after our end.
    const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = { host: '127.0.0.1', port: tcp.tlsPort, servername: 'localhost', ca, allowHalfOpen: true };
    const sock = tls.connect(options);
    t.teardown(() => sock.destroy());
    await once(sock, 'secureConnect');
    const chunks: Buffer[] = [];
    let received = 0;
    const echoed = new Promise<void>((resolve) => {
      sock.on('data', (d: Buffer) => {
        chunks.push(d);
        received += d.length;
        if (received >= data.length) resolve();
      });
    });
    // Half-close only after the echo: a FIN that reaches the socket before the sidecar installs kTLS makes the
    // kernel refuse TCP_ULP (ENOTCONN, seen on 6.1) and the connection rightly stays in userspace — that case has
    // its own test (ktls-early-fin). This test is about TCP mode running on kTLS.
    sock.write(data);
    await echoed;
    sock.end();
    await once(sock, 'end');
    const got = Buffer.concat(chunks);
    const bye = Buffer.from('<upstream-bye>');
    // On failure, what the sidecar said about the connection tells pipeline from front.
    const closedLine = await tcp.waitForLog((l) => l.event === 'connection_closed', 30_000).catch(() => undefined);
    t.comment(`received ${got.length} B; close line: ${JSON.stringify(closedLine ?? null)}`);
    t.equal(sha256(got.subarray(0, data.length)), sha256(data), '1 MiB echoed byte-exact');
    t.same(got.subarray(data.length), bye, 'upstream bytes after our FIN arrived (half-close)');
    t.equal(await tcp.metric('ktls_sidecar_connections_opened_total', { ktls: 'on', protocol: 'tcp' }), 1, 'tcp connection on kTLS');
  });
});
