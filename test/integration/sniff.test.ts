// The sniff step reads the first bytes, puts them back and hands the socket to
// a never-listening tls.Server. Node feeds already-buffered data into the TLS
// handle (initRead in _tls_wrap): these tests fail if the sniffed bytes were lost.
import fs from 'node:fs';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import t from 'tap';
import { Handshaker } from '../../proxy/connection/node-handshake.js';
import { sniff } from '../../proxy/connection/sniff.js';
import { TlsContexts, type TlsSettings } from '../../proxy/tls/context.js';
import { makePki } from '../helpers/pki.js';

const pki = makePki();
t.teardown(() => pki.cleanup());
const settings: TlsSettings = {
  cert: pki.server.cert,
  key: pki.server.key,
  sni: [],
  minVersion: 'TLSv1.2',
  ciphers: '',
  ciphersuites: '',
  clientCA: '',
  requestCert: false,
  sessionTickets: true,
};
const handshaker = new Handshaker(TlsContexts.load(settings), settings, ['http/1.1'], 5000);

/** A server that sniffs, hands over, and echoes the decrypted bytes back. */
const server = net.createServer({ allowHalfOpen: true }, (raw) => {
  void (async () => {
    const verdict = await sniff(raw);
    if (verdict !== 'tls') {
      raw.destroy();
      return;
    }
    const out = await handshaker.handshake(raw);
    if (!out.ok) return;
    out.tls.pipe(out.tls);
  })();
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
t.teardown(() => server.close());
const port = (server.address() as net.AddressInfo).port;

/**
 * A TLS client over a Duplex we control, so the ClientHello can be split:
 * the first `firstBytes` bytes go out alone, the rest after a pause.
 */
function splitClient(firstBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let first = true;
    const carrier = new Duplex({
      write(chunk: Buffer, _enc, cb) {
        if (first && chunk.length > firstBytes) {
          first = false;
          sock.write(chunk.subarray(0, firstBytes));
          setTimeout(() => {
            sock.write(chunk.subarray(firstBytes));
            cb();
          }, 100);
          return;
        }
        first = false;
        sock.write(chunk, cb);
      },
      read() {
        sock.resume();
      },
      final(cb) {
        sock.end();
        cb();
      },
    });
    sock.on('data', (d: Buffer) => carrier.push(d));
    sock.on('end', () => carrier.push(null));
    sock.on('error', reject);
    const c = tls.connect({ socket: carrier, servername: 'localhost', ca: fs.readFileSync(pki.caCert) });
    let got = '';
    c.on('secureConnect', () => c.write('round trip'));
    c.on('data', (d: Buffer) => {
      got += d.toString();
      if (got === 'round trip') {
        c.end();
        resolve(got);
      }
    });
    c.on('error', reject);
  });
}

t.test('a ClientHello in one segment survives the sniff', async (t) => {
  t.equal(await splitClient(1 << 20), 'round trip');
});

t.test('a ClientHello split after 1 byte survives the sniff', async (t) => {
  t.equal(await splitClient(1), 'round trip');
});

t.test('a ClientHello split after 5 bytes (record header) survives the sniff', async (t) => {
  t.equal(await splitClient(5), 'round trip');
});
