import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { HRR_RANDOM, alpnFromEncryptedExtensions, clientHelloServername, clientRandomOf, parseServerHello } from '../../proxy/handshake/hello.js';
import { TlsWireError } from '../../proxy/tls/records.js';

/** Capture the first record a real Node TLS client sends. */
async function captureClientHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) => {
    server.on('connection', (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          resolve(buf.subarray(5, 5 + buf.readUInt16BE(3)));
          s.destroy();
        }
      });
    });
  });
  const c = tls.connect({ port, host: '127.0.0.1', servername });
  c.on('error', () => {});
  const body = await got;
  c.destroy();
  server.close();
  return body;
}

function serverHello(opts: { random?: Buffer; version?: number; suite: number; alpn?: string; psk?: boolean }): Buffer {
  const exts: Buffer[] = [];
  const ext = (type: number, data: Buffer): Buffer => {
    const h = Buffer.alloc(4);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(data.length, 2);
    return Buffer.concat([h, data]);
  };
  if (opts.version) exts.push(ext(43, Buffer.from([opts.version >> 8, opts.version & 0xff])));
  if (opts.alpn) {
    const p = Buffer.from(opts.alpn);
    exts.push(ext(16, Buffer.concat([Buffer.from([0, p.length + 1, p.length]), p])));
  }
  if (opts.psk) exts.push(ext(41, Buffer.from([0, 0])));
  const extBlock = Buffer.concat(exts);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(extBlock.length);
  const suite = Buffer.alloc(2);
  suite.writeUInt16BE(opts.suite);
  return Buffer.concat([Buffer.from([3, 3]), opts.random ?? Buffer.alloc(32, 7), Buffer.from([0]), suite, Buffer.from([0]), len, extBlock]);
}

t.test('ClientHello of a real Node client: SNI and the 32-byte random', async (t) => {
  const body = await captureClientHello('example.test');
  t.equal(clientHelloServername(body.subarray(4)), 'example.test');
  const random = clientRandomOf(body.subarray(4));
  t.equal(random?.length, 32);
  t.same(random, body.subarray(6, 38));
});

t.test('ServerHello: supported_versions wins over legacy_version; ALPN and PSK are read', (t) => {
  const sh = parseServerHello(serverHello({ version: 0x0304, suite: 0x1302, psk: true }));
  t.equal(sh.version, 0x0304);
  t.equal(sh.cipherSuite, 0x1302);
  t.equal(sh.pskAccepted, true);
  t.equal(sh.helloRetryRequest, false);
  const sh12 = parseServerHello(serverHello({ suite: 0xc02f, alpn: 'http/1.1' }));
  t.equal(sh12.version, 0x0303);
  t.equal(sh12.alpn, 'http/1.1');
  t.end();
});

t.test('HelloRetryRequest is recognised by its magic random', (t) => {
  t.equal(parseServerHello(serverHello({ random: HRR_RANDOM, version: 0x0304, suite: 0x1301 })).helloRetryRequest, true);
  t.end();
});

t.test('ALPN from EncryptedExtensions', (t) => {
  const p = Buffer.from('h2');
  const ee = Buffer.concat([Buffer.from([0, 9, 0, 16, 0, 5, 0, 3, 2]), p]);
  t.equal(alpnFromEncryptedExtensions(ee), 'h2');
  t.equal(alpnFromEncryptedExtensions(Buffer.from([0, 0])), null);
  t.end();
});

t.test('a truncated ServerHello throws a wire error', (t) => {
  t.throws(() => parseServerHello(Buffer.from([3, 3, 1, 2])), TlsWireError);
  t.end();
});
