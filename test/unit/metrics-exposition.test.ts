// The exposition: names, labels, default metrics with the prefix, and the
// per-connection accounting (open/close/bytes) that operators rely on.
import t from 'tap';
import { AggregatorRegistry } from 'prom-client';
import {
  createMetrics,
  normalizeLabels,
  statusClass,
} from '../../proxy/admin/metrics.js';
import { PassThrough } from 'node:stream';
import type { ConnectionLabels } from '../../proxy/observe/events.js';
import { userspaceRecordLayer } from '../../proxy/connection/record-layer.js';

const kernel: ConnectionLabels = {
  ktls: 'on',
  ktls_reason: 'enabled',
  tls_version: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  direction: 'tx',
  protocol: 'h2',
};

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-z_0-9]+)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = new Map([...(m[3] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1] ?? '', x[2] ?? '']));
    if (Object.entries(labels).every(([k, v]) => got.get(k) === v)) return Number(m[4]);
  }
  return undefined;
}

t.test('the documented names are in the exposition, with help text', async (t) => {
  const metrics = createMetrics();
  const text = await metrics.registry.metrics();
  for (const name of [
    'ktls_sidecar_connections_accepted_total',
    'ktls_sidecar_connections_active',
    'ktls_sidecar_ktls_enabled',
    'ktls_sidecar_build_info',
    'process_cpu_seconds_total',
    'process_resident_memory_bytes',
    'nodejs_eventloop_lag_p99_seconds',
  ]) {
    t.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), name);
  }
  // prom-client's default metrics keep their standard names, so stock Node.js dashboards and alerts find them;
  // every other family is the sidecar's own and has the prefix.
  const families = [...text.matchAll(/^# TYPE (\S+)/gm)].map((x) => x[1] ?? '');
  const standard = families.filter((f) => /^(process|nodejs)_/.test(f));
  t.ok(standard.length >= 10, `${standard.length} default metrics under their standard names`);
  t.same(families.filter((f) => !f.startsWith('ktls_sidecar_') && !standard.includes(f)), [], 'every other family has the prefix');
  t.same(families.filter((f) => /^ktls_sidecar_(process|nodejs)_/.test(f)), ['ktls_sidecar_process_cpu_seconds_by_mode_total'], 'no default metric under our prefix');
});

t.test('with workers: N the default metrics fold into one pod: CPU and memory summed, event-loop lag the slowest', async (t) => {
  const workers = await Promise.all([createMetrics(), createMetrics()].map((m) => m.registry.getMetricsAsJSON()));
  // Each worker's own values, as they would come over IPC.
  const put = (json: (typeof workers)[number], name: string, value: number): void => {
    const metric = json.find((m) => m.name === name);
    if (!metric) throw new Error(`${name} not registered`);
    for (const v of metric.values) v.value = value;
  };
  workers.forEach((json, i) => {
    put(json, 'process_cpu_seconds_total', i + 1);
    put(json, 'process_resident_memory_bytes', (i + 1) * 1000);
    put(json, 'nodejs_eventloop_lag_p99_seconds', i === 0 ? 0.5 : 0.01);
    put(json, 'nodejs_eventloop_lag_min_seconds', i === 0 ? 0.002 : 0.001);
  });
  const text = await AggregatorRegistry.aggregate(workers).metrics();
  t.equal(sample(text, 'process_cpu_seconds_total'), 3, 'CPU of the pod: summed');
  t.equal(sample(text, 'process_resident_memory_bytes'), 3000, 'RSS of the pod: summed');
  t.equal(sample(text, 'nodejs_eventloop_lag_p99_seconds'), 0.5, 'lag: the slowest worker, not the average');
  t.equal(sample(text, 'nodejs_eventloop_lag_min_seconds'), 0.001, 'lag min: the smallest');
});

t.test('a connection counts as opened, active, then closed, once', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  const counts = { bytesIn: 0, bytesOut: 0 };
  const conn = metrics.connectionOpened(kernel, counts);
  let text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_connections_opened_total', { ktls: 'on', ktls_reason: 'enabled', direction: 'tx', protocol: 'h2' }), 1);
  t.equal(sample(text, 'ktls_sidecar_connections_active', { ktls: 'on' }), 1);
  counts.bytesIn = 100;
  counts.bytesOut = 5000;
  text = await metrics.registry.metrics(); // a scrape counts what moved so far
  t.equal(sample(text, 'ktls_sidecar_bytes_received_total', { ktls: 'on' }), 100);
  counts.bytesIn = 101;
  conn.close('client_close'); // the close counts the rest, once
  counts.bytesIn = 999;
  conn.close('error');
  text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_connections_active', { ktls: 'on' }), 0);
  t.equal(sample(text, 'ktls_sidecar_connections_closed_total', { ktls: 'on', reason: 'client_close' }), 1);
  t.equal(sample(text, 'ktls_sidecar_connections_closed_total', { reason: 'error' }), undefined, 'a second close is ignored');
  t.equal(sample(text, 'ktls_sidecar_bytes_received_total', { ktls: 'on', cipher: 'TLS_AES_128_GCM_SHA256', tls_version: 'TLSv1.3' }), 101);
  t.equal(sample(text, 'ktls_sidecar_bytes_sent_total', { ktls: 'on', direction: 'tx' }), 5000);
});

t.test('label values outside the closed sets become "other"; off means direction none', async (t) => {
  const odd = normalizeLabels({
    ktls: 'off',
    ktls_reason: 'made_up' as never,
    tls_version: 'SSLv3' as never,
    cipher: 'a"b{c}',
    direction: 'txrx',
    protocol: 'gopher' as never,
  });
  t.same(odd, { ktls: 'off', ktls_reason: 'other', tls_version: 'other', cipher: 'other', direction: 'none', protocol: 'none' });
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.connectionRejected('weird' as never);
  metrics.upstreamError('connect_refused');
  const text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_connections_rejected_total', { reason: 'other' }), 1);
  t.equal(sample(text, 'ktls_sidecar_upstream_errors_total', { reason: 'connect_refused' }), 1);
});

t.test('a Node TLSSocket record layer is labelled off, direction none, with the reason it is not in the kernel', (t) => {
  const layer = userspaceRecordLayer(new PassThrough() as never, { tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256' }, 'native_unavailable');
  t.same(layer.labels, { ktls: 'off', ktls_reason: 'native_unavailable', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', direction: 'none' });
  t.same(layer.closeInfo(), { record_layer: 'userspace', tx: 'userspace', rx: 'userspace', ktls_decision: 'userspace' });
  t.end();
});

t.test('http requests by status class, protocol and ktls, with a duration histogram', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.httpRequest({ protocol: 'h2', status: 204, ktls: 'on', durationSeconds: 0.003 });
  metrics.httpRequest({ protocol: 'h2', status: 502, ktls: 'on', durationSeconds: 0.2 });
  const text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_http_requests_total', { protocol: 'h2', status_class: '2xx', ktls: 'on' }), 1);
  t.equal(sample(text, 'ktls_sidecar_http_requests_total', { protocol: 'h2', status_class: '5xx', ktls: 'on' }), 1);
  t.equal(sample(text, 'ktls_sidecar_http_request_duration_seconds_count', { protocol: 'h2', ktls: 'on' }), 2);
  t.equal(sample(text, 'ktls_sidecar_http_request_duration_seconds_bucket', { le: '0.005', protocol: 'h2' }), 1);
  t.equal(statusClass(99), 'other');
  t.equal(statusClass(404), '4xx');
});

t.test('certificate expiry is replaced, not accumulated', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.setCertificates([{ servername: '*', subject: 'CN=old', notAfter: 1_800_000_000_000 }]);
  metrics.setCertificates([{ servername: '*', subject: 'CN=new', notAfter: 1_900_000_000_500 }]);
  const text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_cert_expiry_timestamp_seconds', { subject: 'CN=old' }), undefined);
  t.equal(sample(text, 'ktls_sidecar_cert_expiry_timestamp_seconds', { servername: '*', subject: 'CN=new' }), 1_900_000_000);
});

t.test('handshakes, failures and reload counters', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.connectionAccepted();
  metrics.handshakeCompleted({ tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', protocol: 'http1', durationSeconds: 0.002 });
  metrics.handshakeFailed('no_shared_cipher');
  metrics.configReload('failure', 'sighup');
  metrics.certReload('success');
  metrics.keyUpdate('rx', 'rate_limited');
  metrics.ktlsDrained('closed');
  metrics.setKernelAvailable(true);
  const text = await metrics.registry.metrics();
  t.equal(sample(text, 'ktls_sidecar_connections_accepted_total'), 1);
  t.equal(sample(text, 'ktls_sidecar_handshakes_total', { tls_version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', protocol: 'http1' }), 1);
  t.equal(sample(text, 'ktls_sidecar_handshake_duration_seconds_count', { tls_version: 'TLSv1.3' }), 1);
  t.equal(sample(text, 'ktls_sidecar_handshake_failures_total', { reason: 'no_shared_cipher' }), 1);
  t.equal(sample(text, 'ktls_sidecar_config_reloads_total', { result: 'failure', trigger: 'sighup' }), 1);
  t.equal(sample(text, 'ktls_sidecar_cert_reloads_total', { result: 'success' }), 1);
  t.equal(sample(text, 'ktls_sidecar_ktls_key_updates_total', { direction: 'rx', result: 'rate_limited' }), 1);
  t.equal(sample(text, 'ktls_sidecar_ktls_drained_connections_total', { action: 'closed' }), 1);
  t.equal(sample(text, 'ktls_sidecar_ktls_kernel_available'), 1);
});

t.test('two metric sets in one process do not collide', async (t) => {
  const a = createMetrics();
  const b = createMetrics();
  a.connectionAccepted();
  t.equal(sample(await a.registry.metrics(), 'ktls_sidecar_connections_accepted_total'), 1);
  t.equal(sample(await b.registry.metrics(), 'ktls_sidecar_connections_accepted_total'), 0);
});

