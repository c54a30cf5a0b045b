// Admin mutations are accepted from loopback peers only: with admin.host on a
// pod IP (the chart does this for probes and scraping), PUT /ktls must not be
// open to everyone who can reach the pod. Reads stay open.
import { request } from 'node:http';
import os from 'node:os';
import t, { type Test } from 'tap';
import { createKtlsFlag } from '../../proxy/ktls/flag.js';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { isLoopbackAddress, startAdminServer } from '../../proxy/admin/server.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request to `host:port`, from `localAddress` when given (which sets the peer address the server sees). */
function call(host: string, port: number, method: string, path: string, o: { body?: string; localAddress?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent: false, localAddress: o.localAddress, headers: o.body ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** This machine's first non-internal IPv4 address (e.g. eth0), or undefined. */
function externalIPv4(): string | undefined {
  for (const addrs of Object.values(os.networkInterfaces())) {
    const hit = addrs?.find((a) => a.family === 'IPv4' && !a.internal);
    if (hit) return hit.address;
  }
  return undefined;
}

async function start(t: Test, host: string) {
  const metrics = createMetrics({ defaultMetrics: false });
  const flag = createKtlsFlag({ enabled: true, metrics });
  const refused: string[] = [];
  const warnings: Array<Record<string, unknown>> = [];
  let clock = 0;
  const server = await startAdminServer({
    host,
    port: 0,
    registry: metrics.registry,
    flag,
    readiness: () => Promise.resolve({ ready: true, checks: [] }),
    metrics: { adminRequestRefused: (reason) => void refused.push(reason) },
    logger: { info: () => undefined, error: () => undefined, warn: (obj) => void warnings.push(obj as Record<string, unknown>) },
    now: () => clock,
  });
  t.teardown(() => server.close());
  return { server, flag, refused, warnings, advance: (ms: number) => void (clock += ms) };
}

t.test('isLoopbackAddress: IPv4, IPv6 and IPv4-mapped loopback; nothing else', (t) => {
  for (const a of ['127.0.0.1', '127.10.20.30', '::1', '::ffff:127.0.0.1', '::FFFF:127.0.0.2', '0:0:0:0:0:0:0:1']) t.ok(isLoopbackAddress(a), a);
  for (const a of ['192.0.2.2', '10.0.0.1', '::ffff:192.0.2.2', 'fd00::2', 'fe80::1', '::', '0.0.0.0', '128.0.0.1', '::2', '', undefined]) {
    t.notOk(isLoopbackAddress(a), String(a));
  }
  t.end();
});

const external = externalIPv4();

t.test('bound to a non-loopback address: mutations from it are 403, reads stay open', { skip: external ? false : 'this machine has no non-loopback IPv4 address' }, async (t) => {
  const ip = external ?? '';
  const { server, flag, refused, warnings, advance } = await start(t, ip);
  const put = (): Promise<Reply> => call(ip, server.port, 'PUT', '/ktls', { body: '{"enabled":false}', localAddress: ip });

  const r = await put();
  t.equal(r.status, 403);
  t.match(JSON.parse(r.body), { error: `PUT /ktls is accepted from loopback only (this request came from ${ip})` });
  t.match(r.body, /kubectl exec/);
  t.equal(r.headers['connection'], 'close', 'the unread body ends the connection');
  t.equal(flag.enabled, true, 'the flag did not change');
  t.same(refused, ['not_loopback'], 'counted');
  t.equal(warnings.length, 1, 'logged');
  t.match(warnings[0], { event: 'admin_refused', method: 'PUT', path: '/ktls', remote: ip, refused: 1 });

  // More refusals: each counted, but no log line per request.
  await put();
  t.equal((await call(ip, server.port, 'POST', '/nowhere', { localAddress: ip })).status, 403, 'any non-GET/HEAD method, any path');
  t.equal((await call(ip, server.port, 'DELETE', '/ktls', { localAddress: ip })).status, 403);
  t.equal(refused.length, 4);
  t.equal(warnings.length, 1, 'logged once, not per request');
  advance(60_000);
  await put();
  t.equal(warnings.length, 2, 'a minute later: one more line');
  t.match(warnings[1], { refused: 4 }, 'with the count since the last line');

  for (const path of ['/healthz', '/readyz', '/metrics', '/ktls']) {
    t.equal((await call(ip, server.port, 'GET', path, { localAddress: ip })).status, 200, `GET ${path}`);
  }
  t.equal((await call(ip, server.port, 'HEAD', '/healthz', { localAddress: ip })).status, 200, 'HEAD /healthz');
  t.equal(flag.enabled, true);
});

t.test('bound to the IPv6 wildcard: loopback peers (::1, IPv4-mapped 127.0.0.1) may PUT; the host address may not', async (t) => {
  const { server, flag, refused } = await start(t, '::');
  const r4 = await call('127.0.0.1', server.port, 'PUT', '/ktls', { body: '{"enabled":false}' });
  t.equal(r4.status, 200, 'from 127.0.0.1 (seen as ::ffff:127.0.0.1)');
  t.equal(flag.enabled, false);
  const r6 = await call('::1', server.port, 'PUT', '/ktls', { body: '{"enabled":true}' });
  t.equal(r6.status, 200, 'from ::1');
  t.equal(flag.enabled, true);
  if (external) {
    const rx = await call(external, server.port, 'PUT', '/ktls', { body: '{"enabled":false}', localAddress: external });
    t.equal(rx.status, 403, `from ${external} (seen as ::ffff:${external})`);
    t.equal(flag.enabled, true);
    t.same(refused, ['not_loopback']);
  }
});
