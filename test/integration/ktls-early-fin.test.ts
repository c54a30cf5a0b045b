// A client whose FIN reaches the sidecar before the engine has fed its
// Finished (tcp mode: 1 MiB + end() right on secureConnect). The engine then
// hands off with the whole body in `leftover` and `peerEnded` set, and the
// stream must deliver every leftover record before the EOF, even when its
// reader has backpressure (the front has not read yet). Regression: the JS RX
// side ended the stream at the FIN with the leftover still undelivered, so the
// upstream got a truncated body (seen in the 6.1 lab, where TCP_ULP on a
// CLOSE_WAIT socket fails with ENOTCONN and the JS record layer takes over).
//
// Driven like ktls-engine-path.test.ts: an injected "kTLS available" probe, the
// real native addon, installs fail for real (ENOENT) and the JS record layer
// carries the connection. A relay in front of the sidecar makes the early FIN
// deterministic: it passes the ClientHello, then holds every client byte until
// the client's FIN and writes them in one burst followed by FIN.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import t from 'tap';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import { RecordReader } from '../../proxy/tls/records.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';
import { ContentType } from '../../proxy/tls/control.js';
import { startEngineSidecar } from '../helpers/engine-sidecar.js';
import { sendAndHalfClose, startHoldingRelay } from '../helpers/half-close.js';
import { skipUnlessKtlsLess } from '../helpers/host-ktls.js';
import { makePki } from '../helpers/pki.js';
import { startTcpUpstream } from '../helpers/tcp-upstream.js';
import { patternBytes, sha256 } from '../helpers/upstream.js';
import { socketPair } from '../helpers/socket-pair.js';

const skip = skipUnlessKtlsLess('the lab covers the real install');

const pki = makePki();
t.teardown(() => pki.cleanup());
const ca = fs.readFileSync(pki.caCert);

// TLS 1.3: the client's secureConnect comes right after it sent its
// Finished, so Finished, the body and FIN reach the relay back to back.
const exchange = (port: number, data: Buffer): Promise<Buffer> => sendAndHalfClose(port, ca, data, { minVersion: 'TLSv1.3' });

t.test('tcp mode: Finished, 1 MiB and FIN in one burst come back byte-exact through the engine', { skip }, async (t) => {
  const echo = await startTcpUpstream(false);
  t.teardown(() => echo.close());
  const sc = await startEngineSidecar(t, ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--mode', 'tcp', '--upstream-address', `127.0.0.1:${echo.port}`]);
  const relay = await startHoldingRelay(t, sc.port);
  const rounds = 3;
  for (let i = 0; i < rounds; i++) {
    const data = patternBytes(1 << 20, 11 + i);
    const got = await exchange(relay, data);
    t.equal(got.length, data.length + '<upstream-bye>'.length, `round ${i}: every byte came back once`);
    t.equal(sha256(got.subarray(0, data.length)), sha256(data), `round ${i}: byte-exact`);
    t.equal(got.subarray(data.length).toString(), '<upstream-bye>', `round ${i}: half-close forwarded after the data`);
  }
  const lines = await sc.closeLines(rounds);
  for (const line of lines) {
    t.equal(line['ktls_reason'], 'install_failed', 'the engine handed off (install failed with ENOENT)');
    const info = line['ktls_info'] as Record<string, unknown>;
    t.equal(info['bytes_in_userspace'], 1 << 20, 'every received byte was decrypted once in JS');
  }
});

// ---------------------------------------------------------------------------
// The same bug at the stream level, deterministic: a JS-RX RecordLayerStream
// (the install_failed fallback) whose peer's records and FIN are all there
// before the owner reads (the tcp front pauses the stream until its upstream
// connects). Every record must be delivered, once, before the EOF.

const SECRET = randomBytes(32);
const BODY = patternBytes(1 << 20, 21);

/** The client's side: BODY sealed into 16 KiB TLS 1.3 records. */
function sealedBody(): Buffer {
  const peer = RecordProtection.tls13('AES_GCM_128', Buffer.from(SECRET));
  const out: Buffer[] = [];
  for (let o = 0; o < BODY.length; o += 16384) out.push(peer.seal(ContentType.APPLICATION_DATA, BODY.subarray(o, o + 16384)));
  return Buffer.concat(out);
}

function jsStream(raw: net.Socket, leftover: Buffer, peerEnded: boolean): RecordLayerStream {
  const reader = new RecordReader(RecordProtection.tls13('AES_GCM_128', Buffer.from(SECRET)));
  reader.push(leftover);
  return new RecordLayerStream({
    raw, fd: -1, native: null, version: 'TLSv1.3', cipher: 'AES_GCM_128',
    tx: { side: 'js', protection: RecordProtection.tls13('AES_GCM_128', randomBytes(32)) },
    rx: { side: 'js', reader },
    peerEnded, rekeySupported: false, keyUpdateRateLimit: 100, allowHalfOpen: true,
  });
}


/** Wait a few turns without reading (the front waiting for its upstream), then read everything. */
async function readLate(s: RecordLayerStream): Promise<Buffer> {
  s.on('error', () => undefined);
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

t.test('JS RX, FIN before the hand-off (peerEnded): the whole leftover comes before the EOF', async (t) => {
  const [raw] = await socketPair(t);
  const got = await readLate(jsStream(raw, sealedBody(), true));
  t.equal(got.length, BODY.length, 'every byte, once');
  t.equal(sha256(got), sha256(BODY), 'byte-exact');
});

t.test('JS RX, records and FIN arrive on the socket before the owner reads: all of them come before the EOF', async (t) => {
  const [raw, client] = await socketPair(t);
  const wire = sealedBody();
  // Part of the body is the leftover, the rest and the FIN are already on the socket.
  const cut = 100_000;
  client.end(wire.subarray(cut));
  await new Promise((r) => setTimeout(r, 50));
  const got = await readLate(jsStream(raw, wire.subarray(0, cut), false));
  t.equal(got.length, BODY.length, 'every byte, once');
  t.equal(sha256(got), sha256(BODY), 'byte-exact');
});
