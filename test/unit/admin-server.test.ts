// The admin server over real HTTP on port 0.
import t, { type Test } from 'tap';
import { request } from 'node:http';
import { createKtlsFlag } from '../../proxy/ktls/flag.js';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { startAdminServer, type AdminServer } from '../../proxy/admin/server.js';
import type { Readiness } from '../../proxy/readiness.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(server: AdminServer, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: server.host, port: server.port, method, path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function start(t: Test, readiness: () => Promise<Readiness> = () => Promise.resolve({ ready: true, checks: [] })) {
  const metrics = createMetrics({ defaultMetrics: false });
  const flag = createKtlsFlag({ enabled: true, metrics });
  const server = await startAdminServer({ host: '127.0.0.1', port: 0, registry: metrics.registry, flag, readiness });
  t.teardown(() => server.close());
  return { server, flag, metrics };
}

t.test('GET /healthz is 200', async (t) => {
  const { server } = await start(t);
  t.ok(server.port > 0);
  const r = await call(server, 'GET', '/healthz');
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body), { status: 'ok' });
});

t.test('GET /readyz is 200 when ready', async (t) => {
  const { server } = await start(t, () => Promise.resolve({ ready: true, checks: [{ name: 'listener', ok: true }] }));
  const r = await call(server, 'GET', '/readyz');
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body), { ready: true, failing: [], checks: [{ name: 'listener', ok: true }] });
});

t.test('GET /readyz is 503 with the failing checks', async (t) => {
  const checks = [
    { name: 'listener', ok: true },
    { name: 'upstream', ok: false, detail: 'connect ECONNREFUSED 127.0.0.1:8080' },
  ];
  const { server } = await start(t, () => Promise.resolve({ ready: false, checks }));
  const r = await call(server, 'GET', '/readyz');
  t.equal(r.status, 503);
  const body = JSON.parse(r.body) as { failing: unknown[] };
  t.same(body.failing, [checks[1]]);
});

t.test('GET /readyz is 503 when the readiness function throws', async (t) => {
  const { server } = await start(t, () => Promise.reject(new Error('probe exploded')));
  const r = await call(server, 'GET', '/readyz');
  t.equal(r.status, 503);
  t.match(r.body, /probe exploded/);
});

t.test('GET /metrics is Prometheus text with the sidecar metrics', async (t) => {
  const { server, metrics } = await start(t);
  metrics.connectionAccepted();
  const r = await call(server, 'GET', '/metrics');
  t.equal(r.status, 200);
  t.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  t.match(r.body, /^ktls_sidecar_connections_accepted_total 1$/m);
  t.match(r.body, /^ktls_sidecar_ktls_enabled 1$/m);
});

t.test('GET /ktls shows the flag state', async (t) => {
  const { server } = await start(t);
  const r = await call(server, 'GET', '/ktls');
  t.equal(r.status, 200);
  const body = JSON.parse(r.body) as Record<string, unknown>;
  t.equal(body['enabled'], true);
  t.equal(body['source'], 'startup');
  t.type(body['changedAt'], 'string');
});

t.test('PUT /ktls {"enabled": false} turns the flag off (source admin) and the gauge follows', async (t) => {
  const { server, flag, metrics } = await start(t);
  const r = await call(server, 'PUT', '/ktls', '{"enabled": false}');
  t.equal(r.status, 200);
  const body = JSON.parse(r.body) as Record<string, unknown>;
  t.equal(body['enabled'], false);
  t.equal(body['source'], 'admin');
  t.equal(body['changed'], true);
  t.equal(flag.enabled, false);
  t.match(await metrics.registry.metrics(), /^ktls_sidecar_ktls_enabled 0$/m);
  const again = JSON.parse((await call(server, 'GET', '/ktls')).body) as Record<string, unknown>;
  t.equal(again['enabled'], false);
});

t.test('PUT /ktls with a bad body is 400 with a clear message and changes nothing', async (t) => {
  const { server, flag } = await start(t);
  const cases: [string, RegExp][] = [
    ['not json', /must be JSON/],
    ['[true]', /JSON object/],
    ['{"enabled": "false"}', /"enabled" must be true or false/],
    ['{}', /"enabled" must be true or false/],
    ['{"enabled": false, "force": true}', /unknown field.*force/],
    ['', /must be JSON/],
  ];
  for (const [body, message] of cases) {
    const r = await call(server, 'PUT', '/ktls', body);
    t.equal(r.status, 400, body);
    t.match((JSON.parse(r.body) as { error: string }).error, message, body);
  }
  t.equal(flag.enabled, true);
});

t.test('PUT /ktls with a huge body is 413', async (t) => {
  const { server } = await start(t);
  const r = await call(server, 'PUT', '/ktls', `{"enabled": false, "pad": "${'x'.repeat(10_000)}"}`);
  t.equal(r.status, 413);
  t.match(r.body, /larger than/);
});

t.test('other methods are 405 with an Allow header', async (t) => {
  const { server } = await start(t);
  for (const [method, path] of [
    ['POST', '/ktls'],
    ['DELETE', '/ktls'],
    ['PUT', '/healthz'],
    ['POST', '/metrics'],
  ] as const) {
    const r = await call(server, method, path, method === 'POST' || method === 'PUT' ? '{}' : undefined);
    t.equal(r.status, 405, `${method} ${path}`);
    t.ok(r.headers['allow'], 'allow header');
  }
});

t.test('unknown paths are 404', async (t) => {
  const { server } = await start(t);
  const r = await call(server, 'GET', '/nope');
  t.equal(r.status, 404);
  t.match(r.body, /no such endpoint/);
});

t.test('HEAD works on GET endpoints', async (t) => {
  const { server } = await start(t);
  const r = await call(server, 'HEAD', '/healthz');
  t.equal(r.status, 200);
  t.equal(r.body, '');
});

t.test('a port in use is a coded error', async (t) => {
  const { server } = await start(t);
  const metrics = createMetrics({ defaultMetrics: false });
  const flag = createKtlsFlag({ enabled: true });
  await t.rejects(
    startAdminServer({ host: '127.0.0.1', port: server.port, registry: metrics.registry, flag, readiness: () => Promise.resolve({ ready: true, checks: [] }) }),
    { code: 'ERR_KTLS_SIDECAR_ADMIN', message: /EADDRINUSE/ },
  );
});

t.test('workers: N — the primary answers for the pod', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  const flag = createKtlsFlag({ enabled: true, metrics });
  let running = 2;
  let acked = 2;
  const broadcasts: boolean[] = [];
  const server = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    registry: metrics.registry,
    flag,
    readiness: () => Promise.resolve({ ready: true, checks: [] }),
    pod: {
      health: () => ({ ok: running > 0, running }),
      metrics: () => Promise.resolve({ text: 'ktls_sidecar_pod 1\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' }),
      broadcastFlag: (enabled) => {
        broadcasts.push(enabled);
        return Promise.resolve({ workers: 2, acked });
      },
    },
  });
  t.teardown(() => server.close());

  t.test('GET /metrics is the pod exposition, not this registry', async (t) => {
    const r = await call(server, 'GET', '/metrics');
    t.equal(r.status, 200);
    t.equal(r.body, 'ktls_sidecar_pod 1\n');
  });
  t.test('GET /healthz: 200 while a worker is up, 503 when none is', async (t) => {
    t.same(JSON.parse((await call(server, 'GET', '/healthz')).body), { status: 'ok', workers_running: 2 });
    running = 0;
    const r = await call(server, 'GET', '/healthz');
    t.equal(r.status, 503);
    t.same(JSON.parse(r.body), { status: 'no_worker', workers_running: 0 });
    running = 2;
  });
  t.test('PUT /ktls sets the flag, broadcasts it and says how many workers applied it', async (t) => {
    const r = await call(server, 'PUT', '/ktls', '{"enabled":false}');
    t.equal(r.status, 200);
    t.match(JSON.parse(r.body), { enabled: false, changed: true, workers: 2, acked: 2 });
    t.equal(flag.enabled, false);
    t.same(broadcasts, [false]);
    // Unchanged in the primary, still sent: a worker may differ.
    acked = 0;
    const none = await call(server, 'PUT', '/ktls', '{"enabled":false}');
    t.equal(none.status, 503, 'no worker applied it');
    t.match(JSON.parse(none.body), { enabled: false, changed: false, workers: 2, acked: 0 });
    t.same(broadcasts, [false, false]);
  });
});
