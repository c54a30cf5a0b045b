// The client going away while the offload hook is being asked (seen in the
// lab under load: the socket destroyed by a reset while decide() ran) must end
// that handshake as reset — not as an exception out of the engine's
// record pump (an unhandled rejection the crash guard had to catch).
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import { HandshakeError } from '../../proxy/handshake/failure.js';
import { makeCerts, nodeTls, serverTlsOptions } from './handoff-harness.js';

const certs = makeCerts();
t.teardown(() => certs.cleanup());

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`${version}: the socket destroyed during the offload hook → HandshakeError reset, nothing thrown`, async (t) => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    t.teardown(() => process.off('unhandledRejection', onUnhandled));
    const engine = new HandshakeEngine(tls.createServer(serverTlsOptions(certs, version)), { handshakeTimeoutMs: 10_000, maxBufferedBytes: 256 * 1024 });
    t.teardown(() => engine.close());
    let asked = false;
    const outcome = new Promise<unknown>((resolve) => {
      const server = net.createServer((raw) => {
        raw.on('error', () => undefined);
        engine.accept(raw, {
          offload: () => {
            asked = true;
            raw.destroy();
            return true;
          },
        }).then(resolve, resolve);
      });
      t.teardown(() => server.close());
      server.listen(0, '127.0.0.1', () => {
        void nodeTls((server.address() as net.AddressInfo).port, certs, { tlsOpts: { minVersion: version, maxVersion: version }, reqs: [[10, 10]], timeoutMs: 5000 });
      });
    });
    const result = await Promise.race([outcome, new Promise((r) => setTimeout(() => r('no verdict within 5 s'), 5000))]);
    t.ok(asked, 'the offload hook was asked');
    t.ok(result instanceof HandshakeError, `the handshake failed with a HandshakeError (got ${String(result)})`);
    t.equal((result as HandshakeError).reason, 'reset');
    await new Promise((r) => setTimeout(r, 50));
    t.same(unhandled.map(String), [], 'no unhandled rejection');
  });
}
