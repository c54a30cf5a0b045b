// Probe gauges on a prom-client Registry: one series per cipher × version × direction,
// the summary gauges, and the kernel's tls_stat counters read at scrape time.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { loadNative } from '../../native/index.js';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { registerProbeMetrics } from '../../proxy/admin/probe-metrics.js';

t.test('cipher, availability, rekey and native gauges follow the probe', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  registerProbeMetrics(reg, probe, { tlsStatPath: join(dir, 'absent') });
  const text = await reg.metrics();
  const series = text.split('\n').filter((l) => l.startsWith('ktls_sidecar_kernel_cipher_supported{'));
  t.equal(series.length, 16, '2 versions x 4 ciphers x 2 directions');
  const one = `ktls_sidecar_kernel_cipher_supported{cipher="AES_GCM_128",version="TLSv1.3",direction="tx"} ${probe.supports('TLSv1.3', 'AES_GCM_128', 'tx') ? 1 : 0}`;
  t.ok(series.includes(one), one);
  t.match(text, new RegExp(`^ktls_sidecar_kernel_tls_available ${probe.available ? 1 : 0}$`, 'm'));
  t.match(text, new RegExp(`^ktls_sidecar_kernel_rekey_supported ${probe.rekey ? 1 : 0}$`, 'm'));
  t.match(text, /^ktls_sidecar_native_available 1$/m);
  t.notMatch(text, /ktls_sidecar_kernel_tls_stat\{/, 'no tls_stat series without the file');
});

t.test('native_available is 0 when the addon is missing', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true, native: loadNative('/nonexistent/ktls_native.node') });
  const reg = new Registry();
  registerProbeMetrics(reg, probe);
  t.match(await reg.metrics(), /^ktls_sidecar_native_available 0$/m);
});

t.test('tls_stat counters are read at scrape time, every counter the file has', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  const reg = new Registry();
  const dir = mkdtempSync(join(tmpdir(), 'probe-metrics-'));
  const file = join(dir, 'tls_stat');
  registerProbeMetrics(reg, probe, { tlsStatPath: file });
  writeFileSync(file, 'TlsTxSw 3\nTlsDecryptError 1\n');
  let text = await reg.metrics();
  t.match(text, /^ktls_sidecar_kernel_tls_stat\{counter="TlsTxSw"\} 3$/m);
  t.match(text, /^ktls_sidecar_kernel_tls_stat\{counter="TlsDecryptError"\} 1$/m);
  writeFileSync(file, 'TlsTxSw 5\nTlsTxRekeyOk 2\n');
  text = await reg.metrics();
  t.match(text, /^ktls_sidecar_kernel_tls_stat\{counter="TlsTxSw"\} 5$/m, 'new value at the next scrape');
  t.match(text, /^ktls_sidecar_kernel_tls_stat\{counter="TlsTxRekeyOk"\} 2$/m);
  t.notMatch(text, /counter="TlsDecryptError"/, 'a counter gone from the file is gone from the scrape');
  rmSync(file);
  t.notMatch(await reg.metrics(), /ktls_sidecar_kernel_tls_stat\{/, 'module unloaded: no series');
});

t.test('kernel_tls_available takes the value the caller gave ktls_kernel_available', async (t) => {
  const probe = await probeKernel({ skipNicOffload: true, native: loadNative('/nonexistent/ktls_native.node') });
  const reg = new Registry();
  registerProbeMetrics(reg, probe, { kernelAvailable: true });
  t.match(await reg.metrics(), /^ktls_sidecar_kernel_tls_available 1$/m);
});
