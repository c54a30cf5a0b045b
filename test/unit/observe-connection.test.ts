// A connection's events reach every observer (fanOut), and the two that ship
// turn them into the documented counters and the one close line: a refusal
// is counted as a rejection or a handshake failure, never both.
import t from 'tap';
import { createMetrics } from '../../proxy/admin/metrics.js';
import { closeLog } from '../../proxy/observe/close-log.js';
import { type ConnectionObserver, type OpenedConnection, fanOut } from '../../proxy/observe/events.js';
import { metricsObserver } from '../../proxy/observe/metrics-observer.js';
import { captureLog } from '../helpers/log-capture.js';
import { metricValue } from '../helpers/metrics.js';

const conn: OpenedConnection = {
  id: 7,
  remoteAddress: '127.0.0.1',
  remotePort: 4000,
  acceptedAt: performance.now(),
  servername: 'a.example',
  alpn: 'h2',
  tlsVersion: 'TLSv1.3',
  cipher: 'TLS_AES_128_GCM_SHA256',
  labels: { ktls: 'on', ktls_reason: 'enabled', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', direction: 'txrx', protocol: 'h2' },
  bytes: { bytesIn: 3, bytesOut: 4 },
};

t.test('fanOut: every part hears every event, in order; spans and kTLS events fan out too', (t) => {
  const heard: string[] = [];
  const part = (name: string): Partial<ConnectionObserver> => ({
    accepted: () => heard.push(`${name} accepted`),
    opened: (c) => ({ closed: (end) => heard.push(`${name} closed ${end.reason} ${c.bytes.bytesIn}/${end.bytesOut}`) }),
    ktls: () => ({ keyUpdate: (d, r) => heard.push(`${name} keyUpdate ${d} ${r}`) }),
  });
  const o = fanOut(part('a'), {}, part('b'));
  o.accepted();
  const span = o.opened(conn);
  span.closed?.({ reason: 'client_close', error: undefined, bytesIn: 3, bytesOut: 4, closeInfo: {} });
  o.ktls(7).keyUpdate?.('rx', 'ok');
  o.ktls(7).installFailed?.({ errno: 'EINVAL', kind: 'unsupported', stage: 'install_tx' } as never);
  t.same(heard, [
    'a accepted', 'b accepted', 'a closed client_close 3/4', 'b closed client_close 3/4', 'a keyUpdate rx ok', 'b keyUpdate rx ok',
  ]);
  t.end();
});

t.test('refusals: counted once by kind, one close line each (reason as the line says it)', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  const { lines, logger } = captureLog();
  const o = fanOut(metricsObserver(metrics), closeLog(logger, () => 'all'));
  const who = { id: 1, remoteAddress: '127.0.0.1', remotePort: 1, acceptedAt: performance.now() };
  for (let i = 0; i < 4; i++) o.accepted();
  o.refused(who, { kind: 'rejected', reason: 'plain_http' });
  o.refused(who, { kind: 'handshake_failure', reason: 'no_shared_cipher' }, new Error('no shared cipher'));
  o.refused(who, { kind: 'rejected', reason: 'other', closeReason: 'ktls_install_aborted' });
  o.opened(conn).closed?.({ reason: 'idle_timeout', error: undefined, bytesIn: 3, bytesOut: 4, closeInfo: { record_layer: 'kernel' } });
  o.ktls(1).offload?.('installed', 'tx', 'sw');
  o.ktls(1).syscallError?.({ errno: 'EAGAIN', kind: 'would_block', stage: 'recvmsg' } as never);
  const m = await metrics.registry.metrics();
  t.equal(metricValue(m, 'ktls_sidecar_ktls_offload_total', { result: 'installed', direction: 'tx', offload: 'sw' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_ktls_errors_total'), 0, 'EAGAIN is not an error');
  t.equal(metricValue(m, 'ktls_sidecar_connections_accepted_total'), 4);
  t.equal(metricValue(m, 'ktls_sidecar_connections_rejected_total', { reason: 'plain_http' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_connections_rejected_total', { reason: 'other' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_handshake_failures_total', { reason: 'no_shared_cipher' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_handshake_failures_total'), 1, 'a rejection is not also a handshake failure');
  t.equal(metricValue(m, 'ktls_sidecar_connections_closed_total', { reason: 'idle_timeout', ktls: 'on' }), 1);
  t.equal(metricValue(m, 'ktls_sidecar_bytes_received_total', { ktls: 'on' }), 3, 'the bytes are read from the connection');
  const closed = lines.filter((l) => l['event'] === 'connection_closed');
  t.same(closed.map((l) => l['close_reason']), ['plain_http', 'handshake_no_shared_cipher', 'ktls_install_aborted', 'idle_timeout']);
  t.same(closed[1]?.['err'], { type: 'Error', message: 'no shared cipher' });
  t.same(closed[3]?.['ktls_info'], { record_layer: 'kernel' });
  t.equal(closed[3]?.['bytes_in'], 3);
  t.end();
});
