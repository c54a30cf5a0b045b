// TCP mode: bytes to upstream.address both ways after the handshake,
// half-close honoured, optional PROXY v2 header with the client address and
// the SNI/ALPN TLVs, parsed by the test upstream.
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { buildProxyV2Header, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY } from '../../proxy/fronts/proxy-protocol.js';
import { metricValue } from '../helpers/metrics.js';
import { makePki } from '../helpers/pki.js';
import { startSidecar } from '../helpers/sidecar.js';
import { parseProxyV2Header } from '../helpers/proxy-v2.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const [echo, ppEcho] = await Promise.all([startTcpUpstream(false), startTcpUpstream(true)]);
t.teardown(() => Promise.all([echo.close(), ppEcho.close()]));
const common = ['--mode', 'tcp', '--tls-cert', pki.server.cert, '--tls-key', pki.server.key];
const [plain, pp] = await Promise.all([
  startSidecar([...common, '--upstream-address', `127.0.0.1:${echo.port}`]),
  startSidecar([...common, '--upstream-address', `127.0.0.1:${ppEcho.port}`, '--upstream-proxy-protocol', 'v2']),
]);
t.teardown(() => Promise.all([plain.stop(), pp.stop()]));

/** tls.connect honours allowHalfOpen (passed to the TLSSocket) though @types/node omits it. */
type HalfOpenOptions = tls.ConnectionOptions & { allowHalfOpen: boolean };

/** Connect, send `data`, half-close, collect all until the sidecar closes. */
function exchange(port: number, data: Buffer, opts: tls.ConnectionOptions = {}): Promise<{ got: Buffer; local: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const options: HalfOpenOptions = { host: '127.0.0.1', port, ca: fs.readFileSync(pki.caCert), servername: 'localhost', allowHalfOpen: true, ...opts };
    const s = tls.connect(options, () => {
      s.write(data);
      s.end();
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve({ got: Buffer.concat(chunks), local: s }));
  });
}

t.test('bytes are echoed byte-exact through the TLS tunnel', async (t) => {
  const data = patternBytes(2 * 1024 * 1024, 11);
  const { got } = await exchange(plain.tlsPort, data);
  const echoed = got.subarray(0, data.length);
  t.equal(sha256(echoed), sha256(data));
});

t.test('half-close: after the client FIN the upstream can still answer', async (t) => {
  const { got } = await exchange(plain.tlsPort, Buffer.from('hello'));
  t.equal(got.toString(), 'hello<upstream-bye>');
});

t.test('PROXY v2 header carries the client address, SNI and ALPN', async (t) => {
  let localPort = 0;
  const { got } = await new Promise<{ got: Buffer }>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const options: HalfOpenOptions = { host: '127.0.0.1', port: pp.tlsPort, ca: fs.readFileSync(pki.caCert), servername: 'localhost', allowHalfOpen: true };
    const s = tls.connect(options, () => {
      localPort = s.localPort ?? 0;
      s.end('ping');
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve({ got: Buffer.concat(chunks) }));
  });
  t.equal(got.toString(), 'ping<upstream-bye>', 'header not leaked into the stream');
  const h = ppEcho.headers.at(-1);
  t.ok(h);
  t.equal(h?.command, 'PROXY');
  t.equal(h?.family, 'inet');
  t.equal(h?.sourceAddress, '127.0.0.1');
  t.equal(h?.sourcePort, localPort);
  t.equal(h?.destPort, pp.tlsPort);
  t.equal(h?.tlvs.get(PP2_TYPE_AUTHORITY)?.toString(), 'localhost');
  t.notOk(h?.tlvs.has(PP2_TYPE_ALPN), 'no ALPN negotiated in tcp mode, so no ALPN TLV');
});

t.test('tcp connections are counted with protocol tcp and plaintext bytes', async (t) => {
  const m = await plain.metrics();
  t.ok(metricValue(m, 'ktls_sidecar_connections_opened_total', { protocol: 'tcp', ktls: 'off' }) >= 2);
  t.ok(metricValue(m, 'ktls_sidecar_bytes_received_total', { protocol: 'tcp' }) >= 2 * 1024 * 1024);
});

t.test('PROXY v2 header for IPv6 (and mixed) addresses round-trips', (t) => {
  const h = parseProxyV2Header(
    buildProxyV2Header({ sourceAddress: '2001:db8::1', sourcePort: 40000, destAddress: '127.0.0.1', destPort: 8443, alpn: 'h2', servername: 'a.example' }),
  );
  t.equal(h?.family, 'inet6');
  t.equal(h?.sourceAddress, '2001:db8:0:0:0:0:0:1');
  t.equal(h?.destAddress, '0:0:0:0:0:ffff:7f00:1');
  t.equal(h?.sourcePort, 40000);
  t.equal(h?.tlvs.get(PP2_TYPE_ALPN)?.toString(), 'h2');
  t.equal(h?.tlvs.get(PP2_TYPE_AUTHORITY)?.toString(), 'a.example');
  t.end();
});
