// The parts of workers: N that need no processes: how many workers `auto` is,
// the flag a worker starts with, the IPC message guards, and how the primary
// folds the workers' registries into one exposition (each metric's aggregator).
import t from 'tap';
import { AggregatorRegistry } from 'prom-client';
import { createMetrics, createPrimaryMetrics } from '../../proxy/admin/metrics.js';
import { isFromWorker, isToWorker } from '../../proxy/workers/messages.js';
import { workerCount } from '../../proxy/workers/primary.js';
import { POD_FLAG_ENV, podFlagAtStart } from '../../proxy/workers/worker.js';
import { metricValue } from '../helpers/metrics.js';

t.test('workers: auto is one per available CPU, at least 1; a number is itself', (t) => {
  t.equal(workerCount('auto', () => 8), 8);
  t.equal(workerCount('auto', () => 0), 1);
  t.equal(workerCount(3, () => 8), 3);
  t.equal(workerCount(1), 1);
  t.end();
});

t.test('a worker starts with the pod flag the primary forked it with, else the config', (t) => {
  t.equal(podFlagAtStart({ [POD_FLAG_ENV]: '0' }, true), false);
  t.equal(podFlagAtStart({ [POD_FLAG_ENV]: '1' }, false), true);
  t.equal(podFlagAtStart({}, true), true);
  t.equal(podFlagAtStart({ [POD_FLAG_ENV]: 'yes' }, false), false, 'anything else: the config');
  t.end();
});

t.test('only our own messages are taken from the IPC channel', (t) => {
  t.ok(isToWorker({ kind: 'ktls-sidecar:metrics', id: 1 }));
  t.ok(isToWorker({ kind: 'ktls-sidecar:shutdown' }));
  t.notOk(isToWorker({ kind: 'ktls-sidecar:hello' }), 'a worker → primary message');
  t.notOk(isToWorker({ type: 'prom-client:getMetricsReq', requestId: 1 }), "prom-client's own cluster message");
  t.notOk(isToWorker(null));
  t.notOk(isToWorker('ktls-sidecar:metrics'));
  t.ok(isFromWorker({ kind: 'ktls-sidecar:reply', id: 1, body: null }));
  t.notOk(isFromWorker({ kind: 'ktls-sidecar:flag', id: 1 }));
  t.end();
});

t.test('the pod exposition: counts summed, facts and the flag not multiplied', async (t) => {
  const labels = { ktls: 'off', ktls_reason: 'kernel_no_tls', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', direction: 'none', protocol: 'http1' } as const;
  const workers = [createMetrics({ version: '9.9.9' }), createMetrics({ version: '9.9.9' })];
  workers.forEach((w, i) => {
    for (let n = 0; n <= i; n++) w.connectionOpened(labels, { bytesIn: 0, bytesOut: 0 }); // 1 and 2 open connections
    w.setKernelAvailable(true);
    w.setKtlsEnabled(true);
    w.ktlsFlagChanged('admin');
    w.configReload('success', 'sighup');
    w.setCertificates([{ servername: '*', subject: 'CN=a', notAfter: (i + 1) * 1_000_000 }]);
  });
  const primary = createMetrics({ version: '9.9.9' });
  primary.setKtlsEnabled(true);
  primary.ktlsFlagChanged('admin');
  const pm = createPrimaryMetrics(primary.registry);
  pm.workers(2, 2);
  pm.workerRestarted('signal');
  const json = await Promise.all([...workers.map((w) => w.registry.getMetricsAsJSON()), primary.registry.getMetricsAsJSON()]);
  const text = await AggregatorRegistry.aggregate(json).metrics();
  t.equal(metricValue(text, 'ktls_sidecar_connections_opened_total', labels), 3, 'counters: summed');
  t.equal(metricValue(text, 'ktls_sidecar_connections_active', labels), 3, 'open connections: summed');
  t.equal(metricValue(text, 'ktls_sidecar_build_info', { version: '9.9.9' }), 1, 'build info: first');
  t.equal(metricValue(text, 'ktls_sidecar_ktls_kernel_available'), 1, 'kernel availability: first (a worker, the primary is last)');
  t.equal(metricValue(text, 'ktls_sidecar_ktls_enabled'), 1, 'the flag: min');
  t.equal(metricValue(text, 'ktls_sidecar_ktls_flag_changes_total', { source: 'admin' }), 1, 'one change of the pod flag: max');
  t.equal(metricValue(text, 'ktls_sidecar_config_reloads_total', { result: 'success', trigger: 'sighup' }), 1, 'one reload of the pod: max');
  t.equal(metricValue(text, 'ktls_sidecar_cert_expiry_timestamp_seconds'), 1000, 'the earliest expiry: min');
  t.equal(metricValue(text, 'ktls_sidecar_workers', { state: 'running' }), 2);
  t.equal(metricValue(text, 'ktls_sidecar_worker_restarts_total', { reason: 'signal' }), 1);
  t.equal(text.split('\n').filter((l) => l.startsWith('process_start_time_seconds ')).length, 0, "prom-client omits a per-process start time");
});
