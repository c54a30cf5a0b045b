// sidecar.extraConfig has the sidecar's own config schema in values.schema.json, so a misspelt key
// or a value the sidecar refuses fails `helm lint`/`helm template` instead of crash-looping the pod.
// The schema there is generated from proxy/config/schema.ts; this test fails when the two drift.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { schema, schemaKeys, type SchemaLeaf, type SchemaTree } from '../../proxy/config/schema.js';
import { VALUES_SCHEMA, extraConfigSchema } from './helpers/config-json-schema.js';
import { lint, render } from './helpers/render.js';

t.test('values.schema.json holds the generated extraConfig schema (npx tsx test/deploy/helpers/config-json-schema.ts --write)', (t) => {
  const values = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as { properties: { sidecar: { properties: Record<string, unknown> } } };
  t.same(values.properties.sidecar.properties['extraConfig'], extraConfigSchema());
  t.end();
});

t.test('every key of the sidecar schema is in it', (t) => {
  const generated = extraConfigSchema();
  for (const { key } of schemaKeys()) {
    let node: Record<string, unknown> | undefined = generated;
    for (const part of key.split('.')) node = (node?.['properties'] as Record<string, Record<string, unknown>> | undefined)?.[part];
    t.ok(node, key);
  }
  t.end();
});

/** The schema's defaults as a config tree (what a config file holding every key would say). */
function defaults(tree: SchemaTree): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, node] of Object.entries(tree)) {
    out[k] = 'doc' in node && 'default' in node ? (node as SchemaLeaf).default : defaults(node);
  }
  return out;
}

t.test('the sidecar defaults of every key pass the chart schema (nothing valid is refused)', async (t) => {
  const all = defaults(schema);
  // Keys the sidecar accepts empty only as "unset" are fine; tls.cert/key are set by the chart anyway.
  const r = await lint({ setJson: { 'sidecar.extraConfig': all } });
  t.equal(r.code, 0, r.output);
});

const valid: [what: string, value: Record<string, unknown>][] = [
  ['durations in every unit and as milliseconds', { timeouts: { idle: '2m', handshake: '500ms', headers: 30000, requestBody: '1h' } }],
  ['sizes with units', { limits: { maxHeaderSize: '32KiB', maxHandshakeBufferBytes: '1MB', maxConnections: 20000 } }],
  ['an SNI list', { tls: { sni: [{ servername: '*.example.com', cert: '/c.pem', key: '/k.pem' }] } }],
  ['workers auto', { workers: 'auto' }],
  ['an IPv6 upstream address', { upstream: { address: '[::1]:5432' } }],
];
for (const [what, value] of valid) {
  t.test(`extraConfig accepts ${what}`, async (t) => {
    const r = await lint({ setJson: { 'sidecar.extraConfig': value } });
    t.equal(r.code, 0, r.output);
  });
}

const invalid: [what: string, value: Record<string, unknown>, message: RegExp][] = [
  ['a misspelt key', { timeouts: { idel: '2m' } }, /extraConfig\/timeouts.*idel/],
  ['an unknown section', { limit: { maxConnections: 5 } }, /extraConfig.*limit/],
  ['a duration that is not one', { timeouts: { idle: 'soon' } }, /extraConfig\/timeouts\/idle/],
  ['a count that is a string', { limits: { maxConnections: 'many' } }, /extraConfig\/limits\/maxConnections/],
  ['a port out of range', { listen: { port: 70000 } }, /extraConfig\/listen\/port/],
  ['a mode outside the enum', { mode: 'udp' }, /extraConfig\/mode/],
  ['a sample rate above 1', { ktls: { sampleRate: 2 } }, /extraConfig\/ktls\/sampleRate/],
  ['an SNI entry with an unknown field', { tls: { sni: [{ servername: 'a', cert: '/c', key: '/k', ca: '/x' }] } }, /extraConfig\/tls\/sni\/0/],
  ['a boolean as text', { tls: { sessionTickets: 'yes' } }, /extraConfig\/tls\/sessionTickets/],
  ['workers 0', { workers: 0 }, /extraConfig\/workers/],
];
for (const [what, value, message] of invalid) {
  t.test(`extraConfig refuses ${what} at lint and template time`, async (t) => {
    const r = await lint({ setJson: { 'sidecar.extraConfig': value } });
    t.not(r.code, 0, 'lint fails');
    t.match(r.output, message);
    await t.rejects(render({ setJson: { 'sidecar.extraConfig': value } }), message);
  });
}
