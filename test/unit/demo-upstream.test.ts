// The `--demo` upstream: it listens where upstream.url points (loopback only),
// and when that port is taken it fails with an error naming the port, the key
// and the way out, in the module and through the CLI.
import t from 'tap';
import type { Test } from 'tap';
import http from 'node:http';
import net from 'node:net';
import { ConfigError } from '../../proxy/errors.js';
import { demoListenError, startDemoUpstream } from '../../proxy/demo-upstream.js';
import { runCli } from '../helpers/sidecar.js';

/** A loopback port held open until teardown. */
async function busyPort(t: Test): Promise<number> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as net.AddressInfo).port;
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

t.test('listens on the port upstream.url names, on loopback whatever its host', async (t) => {
  // A port that was free a moment ago: take it, note it, give it back.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const demo = await startDemoUpstream(`http://0.0.0.0:${port}`);
  t.teardown(() => demo.close());
  t.equal(demo.port, port);
  t.equal(demo.url, `http://127.0.0.1:${port}`);
  const r = await get(`${demo.url}/hello`);
  t.equal(r.status, 200);
  t.match(r.body, /Hello from the ktls-sidecar demo upstream\.\nmethod=GET path=\/hello/);
});

t.test('port 0: any free port', async (t) => {
  const demo = await startDemoUpstream('http://127.0.0.1:0');
  t.teardown(() => demo.close());
  t.ok(demo.port > 0);
  t.equal((await get(demo.url)).status, 200);
});

t.test('a port in use: a ConfigError naming upstream.url, the address and the way out', async (t) => {
  const port = await busyPort(t);
  const url = `http://127.0.0.1:${port}`;
  const err = await startDemoUpstream(url).then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, ConfigError);
  t.match(err, {
    code: 'ERR_KTLS_SIDECAR_CONFIG',
    key: 'upstream.url',
    message: new RegExp(`^upstream\\.url: in demo mode .*127\\.0\\.0\\.1:${port} is already in use \\(EADDRINUSE\\); pass --upstream-url http://127\\.0\\.0\\.1:0`),
  });
  t.equal(((err as Error).cause as { code?: string }).code, 'EADDRINUSE', 'the original error is the cause');
});

t.test('other listen failures say why', (t) => {
  t.match(demoListenError(Object.assign(new Error('x'), { code: 'EACCES' }), 'http://127.0.0.1:80', '127.0.0.1', 80).message, /127\.0\.0\.1:80 is a privileged port \(EACCES/);
  t.match(demoListenError(Object.assign(new Error('x'), { code: 'EADDRNOTAVAIL' }), 'http://127.0.0.1:1', '127.0.0.1', 1).message, /cannot be listened on \(EADDRNOTAVAIL\)/);
  t.end();
});

t.test('through the CLI: --demo with the upstream port taken stops with that message', async (t) => {
  const port = await busyPort(t);
  const r = await runCli(['--demo', '--listen-port', '0', '--admin-port', '0', '--upstream-url', `http://127.0.0.1:${port}`]);
  t.equal(r.code, 2, 'does not start: a config error (exit 2)');
  t.match(r.stderr, /^ktls-sidecar: config error: /m, 'one stderr line, like every config error');
  t.match(r.stdout + r.stderr, new RegExp(`upstream\\.url: in demo mode .*127\\.0\\.0\\.1:${port} is already in use.*--upstream-url http://127\\.0\\.0\\.1:0`));
});
