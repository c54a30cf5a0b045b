// The spliced share of the byte counters (ktls_sidecar_bytes_spliced_*_total):
// read from a connection's ByteCounts at scrape and close like the totals,
// a subset of them, and no series at all for a connection that never spliced;
// and the splice pipe pool gauge (ktls_sidecar_splice_pipes_idle).
import t from 'tap';
import { createMetrics } from '../../proxy/admin/metrics.js';
import type { ConnectionLabels } from '../../proxy/observe/events.js';
import { metricValue } from '../helpers/metrics.js';

const labels: ConnectionLabels = {
  ktls: 'on',
  ktls_reason: 'enabled',
  tls_version: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  direction: 'txrx',
  protocol: 'tcp',
};

t.test('spliced bytes: live at scrape, the rest at close, once', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  const counts = { bytesIn: 0, bytesOut: 0, splicedIn: 0, splicedOut: 0 };
  const conn = m.connectionOpened(labels, counts);
  let text = await m.registry.metrics();
  t.notMatch(text, /^ktls_sidecar_bytes_spliced_sent_total\{/m, 'no series before a spliced byte');
  counts.bytesOut = 10_000;
  counts.splicedOut = 9_000; // a pump run in progress, read live
  counts.bytesIn = 50;
  text = await m.registry.metrics();
  t.equal(metricValue(text, 'ktls_sidecar_bytes_spliced_sent_total', { direction: 'txrx' }), 9_000);
  t.equal(metricValue(text, 'ktls_sidecar_bytes_sent_total', { direction: 'txrx' }), 10_000, 'the total includes them');
  t.notMatch(text, /^ktls_sidecar_bytes_spliced_received_total\{/m, 'nothing received was spliced yet');
  counts.bytesOut = 20_000;
  counts.splicedOut = 19_000;
  counts.bytesIn = 1_050;
  counts.splicedIn = 1_000;
  conn.close('client_close');
  counts.splicedOut = 99_999;
  conn.close('client_close');
  text = await m.registry.metrics();
  t.equal(metricValue(text, 'ktls_sidecar_bytes_spliced_sent_total', { protocol: 'tcp' }), 19_000, 'the close counts the rest, once');
  t.equal(metricValue(text, 'ktls_sidecar_bytes_spliced_received_total', { protocol: 'tcp' }), 1_000);
  t.equal(metricValue(text, 'ktls_sidecar_bytes_received_total', { protocol: 'tcp' }), 1_050);
});

t.test('a connection without spliced counts (userspace TLS) adds no spliced series', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  const counts = { bytesIn: 5, bytesOut: 7 };
  m.connectionOpened({ ...labels, ktls: 'off', ktls_reason: 'flag_off', direction: 'none' }, counts).close('client_close');
  const text = await m.registry.metrics();
  t.equal(metricValue(text, 'ktls_sidecar_bytes_sent_total'), 7);
  t.notMatch(text, /^ktls_sidecar_bytes_spliced_/m);
});

t.test('splice_pipes_idle: the pool size, read at each scrape; 0 without the addon', async (t) => {
  let idle = 3;
  const m = createMetrics({ defaultMetrics: false, splicePipesIdle: () => idle });
  t.equal(metricValue(await m.registry.metrics(), 'ktls_sidecar_splice_pipes_idle'), 3);
  idle = 0;
  t.equal(metricValue(await m.registry.metrics(), 'ktls_sidecar_splice_pipes_idle'), 0, 'the pool emptied: the next scrape says so');
  const bare = createMetrics({ defaultMetrics: false });
  t.equal(metricValue(await bare.registry.metrics(), 'ktls_sidecar_splice_pipes_idle'), 0, 'no reader: 0');
});
