// `helm lint --strict` over the default values and every example values file, and the values
// schema refusing what the sidecar would refuse.
import t from 'tap';
import { basename } from 'node:path';
import { exampleValuesFiles, lint, render } from './helpers/render.js';

t.test('helm lint --strict passes with the default values', async (t) => {
  const r = await lint();
  t.equal(r.code, 0, r.output);
  t.match(r.output, /1 chart\(s\) linted, 0 chart\(s\) failed/);
});

for (const file of exampleValuesFiles()) {
  t.test(`helm lint --strict passes with examples/${basename(file)}`, async (t) => {
    const r = await lint({ valuesFiles: [file] });
    t.equal(r.code, 0, r.output);
  });
}

// Each of these is a value the sidecar's config schema (proxy/config/schema.ts) rejects; the chart
// must refuse it at lint/install time instead of rendering a pod that crash-loops.
const invalid: [what: string, set: Record<string, string>, message: RegExp][] = [
  ['ktls.direction outside tx|txrx', { 'ktls.direction': 'rx' }, /ktls\/direction/],
  ['ktls.sampleRate above 1 (as --set gives it: a string)', { 'ktls.sampleRate': '1.5' }, /ktls\/sampleRate/],
  ['ktls.drainOnDisable outside keep|close', { 'ktls.drainOnDisable': 'drop' }, /ktls\/drainOnDisable/],
  ['ktls.drainTimeout that is not a duration', { 'ktls.drainTimeout': 'soon' }, /ktls\/drainTimeout/],
  ['sidecar.mode outside http|tcp', { 'sidecar.mode': 'udp' }, /sidecar\/mode/],
  ['sidecar.logLevel outside the pino levels', { 'sidecar.logLevel': 'verbose' }, /sidecar\/logLevel/],
  ['sidecar.workers 0', { 'sidecar.workers': '0' }, /sidecar\/workers/],
  ['sidecar.workers that is neither a number nor auto', { 'sidecar.workers': 'fast' }, /sidecar\/workers/],
  ['sidecar.tls.minVersion TLSv1.1', { 'sidecar.tls.minVersion': 'TLSv1.1' }, /minVersion/],
  ['upstream.proxyProtocol v1', { 'upstream.proxyProtocol': 'v1' }, /proxyProtocol/],
  ['a port out of range', { 'sidecar.ports.admin': '70000' }, /sidecar\/ports\/admin/],
  ['an unknown top-level key (typo)', { ktsl: 'true' }, /ktsl/],
  ['an unknown ktls key (typo)', { 'ktls.sampleRatio': '0.5' }, /sampleRatio/],
];
t.test('values schema rejects a numeric ktls.sampleRate above 1 and accepts 0.05 from --set', async (t) => {
  const bad = await lint({ setJson: { 'ktls.sampleRate': 1.5 } });
  t.not(bad.code, 0);
  t.match(bad.output, /ktls\/sampleRate/);
  const ok = await lint({ set: { 'ktls.sampleRate': '0.05' } });
  t.equal(ok.code, 0, ok.output);
});

// `helm lint` only logs a template's fail(); install and template stop on it, so render.
t.test('sidecar.env may not pin the runtime flag (env beats the watched file on every reload)', async (t) => {
  await t.rejects(
    render({ setJson: { 'sidecar.env': [{ name: 'KTLS_SIDECAR_KTLS_ENABLED', value: 'true' }] } }),
    /must not set KTLS_SIDECAR_KTLS_ENABLED/,
  );
  const ms = await render({ setJson: { 'sidecar.env': [{ name: 'KTLS_SIDECAR_LOG_LEVEL', value: 'debug' }] } });
  t.ok(ms.some((m) => m.kind === 'Deployment'), 'other KTLS_SIDECAR_* variables are fine');
});

for (const [what, set, message] of invalid) {
  t.test(`values schema rejects ${what}`, async (t) => {
    const r = await lint({ set });
    t.not(r.code, 0, 'lint must fail');
    t.match(r.output, message);
  });
}
