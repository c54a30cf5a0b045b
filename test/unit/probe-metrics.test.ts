// Probe gauges on a prom-client Registry: one series per cipher × version × direction,
// the summary gauges, and the kernel's tls_stat rows read at scrape time: the TlsCurr* sockets
// as a gauge, every other row as a counter that follows the kernel's value.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { loadNative } from '../../native/index.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { registerProbeMetrics } from '../../proxy/admin/probe-metrics.js';

t.test('cipher, rekey and native gauges follow the probe', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  registerProbeMetrics(reg, probe, { tlsStatPath: join(dir, 'absent') });
  const text = await reg.metrics();
  const series = text.split('\n').filter((l) => l.startsWith('ktls_sidecar_kernel_cipher_supported{'));
  t.equal(series.length, 16, '2 versions x 4 ciphers x 2 directions');
  const one = `ktls_sidecar_kernel_cipher_supported{cipher="AES_GCM_128",version="TLSv1.3",direction="tx"} ${probe.supports('TLSv1.3', 'AES_GCM_128', 'tx') ? 1 : 0}`;
  t.ok(series.includes(one), one);
  t.notMatch(text, /ktls_sidecar_kernel_tls_available/, 'the duplicate availability gauge is gone (ktls_sidecar_ktls_kernel_available is the one)');
  t.match(text, new RegExp(`^ktls_sidecar_kernel_rekey_supported ${probe.rekey ? 1 : 0}$`, 'm'));
  t.match(text, /^ktls_sidecar_native_available 1$/m);
  t.notMatch(text, /ktls_sidecar_kernel_tls_(stat_total|sockets)\{/, 'no tls_stat series without the file');
});

t.test('native_available is 0 when the addon is missing', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true, native: loadNative('/nonexistent/ktls_native.node') });
  const reg = new Registry();
  registerProbeMetrics(reg, probe);
  t.match(await reg.metrics(), /^ktls_sidecar_native_available 0$/m);
});

/** The value of one series in Prometheus text, undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

t.test('tls_stat is read at scrape time: TlsCurr* rows as sockets (gauge), the rest as counters', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  const file = join(dir, 'tls_stat');
  registerProbeMetrics(reg, probe, { tlsStatPath: file });
  writeFileSync(file, 'TlsCurrTxSw 2\nTlsCurrRxSw 1\nTlsTxSw 3\nTlsDecryptError 1\n');
  let text = await reg.metrics();
  t.match(text, /^# TYPE ktls_sidecar_kernel_tls_sockets gauge$/m);
  t.match(text, /^# TYPE ktls_sidecar_kernel_tls_stat_total counter$/m);
  t.equal(value(text, 'ktls_sidecar_kernel_tls_sockets{stat="TlsCurrTxSw"}'), 2);
  t.equal(value(text, 'ktls_sidecar_kernel_tls_sockets{stat="TlsCurrRxSw"}'), 1);
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 3);
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsDecryptError"}'), 1);
  t.notMatch(text, /ktls_sidecar_kernel_tls_stat_total\{stat="TlsCurr/, 'a socket gauge is never a counter');
  t.notMatch(text, /ktls_sidecar_kernel_tls_sockets\{stat="Tls(?!Curr)/, 'a counter is never a socket gauge');

  writeFileSync(file, 'TlsCurrTxSw 0\nTlsTxSw 5\nTlsDecryptError 1\nTlsTxRekeyOk 2\n');
  text = await reg.metrics();
  t.equal(value(text, 'ktls_sidecar_kernel_tls_sockets{stat="TlsCurrTxSw"}'), 0, 'sockets go down as they close');
  t.equal(value(text, 'ktls_sidecar_kernel_tls_sockets{stat="TlsCurrRxSw"}'), undefined, 'a row gone from the file is gone from the scrape');
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 5, "the counter is the kernel's value");
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsDecryptError"}'), 1);
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxRekeyOk"}'), 2, 'a row that appears starts at its value');

  rmSync(file);
  text = await reg.metrics();
  t.notMatch(text, /ktls_sidecar_kernel_tls_(stat_total|sockets)\{/, 'module unloaded: no series');
  writeFileSync(file, 'TlsCurrTxSw 1\nTlsTxSw 1\n');
  text = await reg.metrics();
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 1, 'module loaded again: the kernel counts from 0 again, so does the series');
  t.equal(value(text, 'ktls_sidecar_kernel_tls_sockets{stat="TlsCurrTxSw"}'), 1);
});

t.test('a tls_stat counter that goes down restarts at the new value, never a negative increase', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  const file = join(dir, 'tls_stat');
  registerProbeMetrics(reg, probe, { tlsStatPath: file });
  writeFileSync(file, 'TlsTxSw 10\nTlsRxSw 4\n');
  await reg.metrics();
  // The tls module reloaded between two scrapes: the kernel's counters started from 0 again.
  writeFileSync(file, 'TlsTxSw 3\nTlsRxSw 6\n');
  const text = await reg.metrics();
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 3, 'a reset, as Prometheus reads a restarted counter');
  t.equal(value(text, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsRxSw"}'), 6, 'the other counter only grew');
  writeFileSync(file, 'TlsTxSw 7\nTlsRxSw 6\n');
  t.equal(value(await reg.metrics(), 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 7, 'and follows the kernel from there');
});

t.test('two scrapes at once read the file once each and agree', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  const file = join(dir, 'tls_stat');
  registerProbeMetrics(reg, probe, { tlsStatPath: file });
  writeFileSync(file, 'TlsTxSw 4\n');
  const [a, b] = await Promise.all([reg.metrics(), reg.metrics()]);
  t.equal(value(a, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 4);
  t.equal(value(b, 'ktls_sidecar_kernel_tls_stat_total{stat="TlsTxSw"}'), 4, 'not counted twice');
});
