// TLS 1.2 client renegotiation after the hand-off (issue 8, item 0): once the
// engine has handed a connection to the JS record layer, OpenSSL is gone and
// a ClientHello on the connection must be refused — a no_renegotiation
// warning the first time, a fatal alert if the client asks again — counted on
// the close line and logged, never a crash, and nothing else disturbed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import t from 'tap';
import { RecordReader } from '../../proxy/tls/records.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { AlertDescription, AlertLevel, ContentType, HandshakeType, buildHandshakeMessage } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';
import { startEngineSidecar } from '../helpers/engine-sidecar.js';
import { sendAndHalfClose } from '../helpers/half-close.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { makePki } from '../helpers/pki.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { socketPair } from '../helpers/socket-pair.js';

const skip = skipUnlessKtlsLess('the lab covers the kernel RX side');

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);

/** TLS 1.2 to `port`; echo one line, then ask to renegotiate; resolves with how it ended. */
function renegotiateAfterEcho(port: number): Promise<{ echoed: string; outcome: string }> {
  return new Promise((resolve) => {
    let echoed = '';
    let outcome = '';
    const c = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' }, () => {
      c.write('before-renegotiation\n');
    });
    c.on('data', (d: Buffer) => {
      echoed += d.toString();
      if (!echoed.endsWith('\n') || outcome) return;
      outcome = 'asked';
      const asked = c.renegotiate({ rejectUnauthorized: false }, (err) => {
        outcome = err ? `callback error: ${err.message}` : 'renegotiated';
      });
      if (!asked) outcome = 'refused locally';
    });
    c.on('error', (e: Error) => (outcome = `error: ${e.message}`));
    c.on('close', () => resolve({ echoed, outcome }));
  });
}

t.test('client renegotiation after the hand-off: refused, logged, counted; other connections go on', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const sc = await startEngineSidecar(t, ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  // A bystander moving 1 MiB (TLS 1.2 AES-GCM, JS record layer after the failed install) meanwhile.
  const data = patternBytes(1 << 20, 31);
  const bystander = sendAndHalfClose(sc.port, ca, data, { maxVersion: 'TLSv1.2' });
  const r = await renegotiateAfterEcho(sc.port);
  t.equal(r.echoed, 'before-renegotiation\n', 'the connection worked before');
  t.not(r.outcome, 'renegotiated', `the renegotiation did not happen (${r.outcome})`);
  const other = await bystander;
  t.equal(sha256(other.subarray(0, data.length)), sha256(data), 'the bystander is byte-exact');

  const line = await sc.closeLine((l) => String(l['cipher']).includes('CHACHA20'));
  const info = line['ktls_info'] as Record<string, unknown>;
  t.equal(line['ktls_reason'], 'cipher_not_allowed');
  t.equal(info['record_layer'], 'js', 'the JS record layer had the connection');
  t.equal(info['renegotiations_refused'], 1, 'one renegotiation refused, on the close line');
  t.ok(sc.lines.some((l) => l.event === 'tls_renegotiation_refused' && l['conn'] === line['conn'] && l['fatal'] === false), 'logged');

  // The process and the listener are fine.
  const after = patternBytes(10_000, 32);
  const got = await sendAndHalfClose(sc.port, ca, after, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' });
  t.equal(sha256(got.subarray(0, after.length)), sha256(after), 'a new connection is served');
});

// ---------------------------------------------------------------------------
// The record layer itself, deterministic: a client that asks twice.


/** Both TLS 1.2 AES-GCM directions: `client` seals what `server` opens and the other way round. */
function tls12Keys() {
  const c2s = { cipher: 'AES_GCM_128' as const, key: randomBytes(16), writeIv: randomBytes(4), seq: 5n, explicitNonce: 77n };
  const s2c = { cipher: 'AES_GCM_128' as const, key: randomBytes(16), writeIv: randomBytes(4), seq: 9n, explicitNonce: 99n };
  return {
    client: { tx: RecordProtection.tls12(c2s), rx: RecordProtection.tls12(s2c) },
    server: { tx: RecordProtection.tls12(s2c), rx: RecordProtection.tls12(c2s) },
  };
}

/** Every record in `wire`, opened with `rx`. */
function openAll(wire: Buffer, rx: RecordProtection): Array<{ type: number; data: Buffer }> {
  const out: Array<{ type: number; data: Buffer }> = [];
  for (let o = 0; o + 5 <= wire.length; ) {
    const len = wire.readUInt16BE(o + 3);
    const opened = rx.open(wire.subarray(o, o + 5), wire.subarray(o + 5, o + 5 + len));
    if (!opened) throw new Error('a record from the server failed authentication');
    out.push({ type: opened.type, data: opened.data });
    o += 5 + len;
  }
  return out;
}

t.test('JS record layer: first ClientHello → no_renegotiation warning, data goes on; second → fatal alert and close', async (t) => {
  const [raw, client] = await socketPair(t);
  const keys = tls12Keys();
  const refused: boolean[] = [];
  const stream = new RecordLayerStream({
    raw, fd: -1, native: null, version: 'TLSv1.2', cipher: 'AES_GCM_128',
    tx: { side: 'js', protection: keys.server.tx },
    rx: { side: 'js', reader: new RecordReader(keys.server.rx) },
    rekeySupported: false, keyUpdateRateLimit: 10, allowHalfOpen: true,
    events: { renegotiationRefused: (fatal) => refused.push(fatal) },
  });
  const errored = new Promise<Error>((resolve) => stream.on('error', resolve));
  const closed = new Promise<void>((resolve) => stream.on('close', resolve));
  const received: Buffer[] = [];
  stream.on('data', (d: Buffer) => received.push(d));
  const wire: Buffer[] = [];
  client.on('data', (d: Buffer) => wire.push(d));

  const hello = buildHandshakeMessage(HandshakeType.CLIENT_HELLO, randomBytes(60));
  client.write(keys.client.tx.seal(ContentType.HANDSHAKE, hello));
  client.write(keys.client.tx.seal(ContentType.APPLICATION_DATA, Buffer.from('still-here')));
  for (let i = 0; i < 100 && Buffer.concat(received).toString() !== 'still-here'; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(Buffer.concat(received).toString(), 'still-here', 'data after a refused renegotiation still flows');
  t.same(refused, [false], 'the first one is refused politely');

  client.write(keys.client.tx.seal(ContentType.HANDSHAKE, hello));
  const err = await errored;
  await closed;
  t.match(err.message, /renegotiation/, 'the stream ends with a protocol error');
  t.same(refused, [false, true], 'the second one is fatal');
  const stats = stream.stats();
  t.equal(stats.renegotiationsRefused, 2);
  t.equal(stats.endReason, 'renegotiation_refused');
  await new Promise((r) => setTimeout(r, 20));
  const alerts = openAll(Buffer.concat(wire), keys.client.rx).filter((r) => r.type === ContentType.ALERT).map((r) => [...r.data]);
  t.same(alerts, [
    [AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION],
    [AlertLevel.FATAL, AlertDescription.UNEXPECTED_MESSAGE],
  ], 'no_renegotiation warning, then unexpected_message');
});
