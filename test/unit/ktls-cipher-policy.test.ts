import t from 'tap';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { parseCipherPolicy, cipherPolicyOf, policyFromRules, CipherPolicyError, DEFAULT_KTLS_CIPHERS, findOffloadableSuite } from '../../proxy/ktls/cipher-policy.js';
import { allSuites } from '../../proxy/tls/suites.js';

/** The entry a CipherPolicyError thrown by `fn` names (undefined when it throws none). */
function badEntryOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CipherPolicyError ? err.entry : undefined;
  }
  return undefined;
}

t.test('IANA and OpenSSL names resolve to the same suite', (t) => {
  const p = parseCipherPolicy(['ECDHE-RSA-AES256-GCM-SHA384']);
  t.equal(p.lookup('TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384')?.suite.code, 0xc030);
  t.equal(p.lookup('ECDHE-RSA-AES256-GCM-SHA384')?.suite.kernelCipher, 'AES_GCM_256');
  const q = parseCipherPolicy(['TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256']);
  t.equal(q.lookup('ECDHE-ECDSA-CHACHA20-POLY1305')?.suite.kernelCipher, 'CHACHA20_POLY1305');
  t.end();
});

t.test('names are case-insensitive and trimmed', (t) => {
  const p = parseCipherPolicy(['  tls_aes_128_gcm_sha256 ']);
  t.ok(p.lookup('TLS_AES_128_GCM_SHA256'));
  t.end();
});

t.test('unlisted suite is not allowed', (t) => {
  const p = parseCipherPolicy(['TLS_AES_128_GCM_SHA256']);
  t.equal(p.lookup('TLS_AES_256_GCM_SHA384'), undefined);
  t.equal(p.lookup('ECDHE-RSA-AES128-SHA256'), undefined);
  t.equal(p.lookup('nonsense'), undefined);
  t.end();
});

t.test('direction override per cipher', (t) => {
  const p = parseCipherPolicy(['TLS_AES_128_GCM_SHA256:tx', 'ECDHE-RSA-AES128-GCM-SHA256:TXRX', 'TLS_AES_256_GCM_SHA384']);
  t.equal(p.lookup('TLS_AES_128_GCM_SHA256')?.direction, 'tx');
  t.equal(p.lookup('TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256')?.direction, 'txrx');
  t.equal(p.lookup('TLS_AES_256_GCM_SHA384')?.direction, undefined);
  t.end();
});

t.test('unknown name: a coded error naming the entry (the config loader names the key)', (t) => {
  const err = t.throws(() => parseCipherPolicy(['TLS_AES_128_GCM_SHA256', 'AES-128-FOO'])) as CipherPolicyError;
  t.ok(err instanceof CipherPolicyError);
  t.equal(err.code, 'ERR_KTLS_SIDECAR_CONFIG');
  t.equal(err.entry, 2);
  t.match(err.message, /^unknown .*"AES-128-FOO".*entry 2/);
  t.end();
});

t.test('a real suite the kernel cannot hold is rejected like an unknown one', (t) => {
  for (const name of ['ECDHE-RSA-AES128-SHA256', 'TLS_AES_128_CCM_8_SHA256', 'AES128-SHA']) {
    t.equal(badEntryOf(() => parseCipherPolicy([name])), 1, name);
  }
  t.end();
});

t.test('bad direction suffix', (t) => {
  t.throws(() => parseCipherPolicy(['TLS_AES_128_GCM_SHA256:rx']), { entry: 1, message: /":tx" or ":txrx"/ });
  t.end();
});

t.test('non-string entry', (t) => {
  t.equal(badEntryOf(() => parseCipherPolicy([42 as unknown as string])), 1);
  t.end();
});

t.test('duplicate suite: same direction is fine, different is an error', (t) => {
  t.equal(parseCipherPolicy(['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'ECDHE-RSA-AES128-GCM-SHA256']).entries.length, 1);
  t.throws(() => parseCipherPolicy(['TLS_AES_128_GCM_SHA256:tx', 'TLS_AES_128_GCM_SHA256:txrx']), { entry: 2, message: /twice/ });
  t.end();
});

t.test('empty list is valid and allows nothing', (t) => {
  const p = parseCipherPolicy([]);
  t.equal(p.entries.length, 0);
  t.equal(p.lookup('TLS_AES_128_GCM_SHA256'), undefined);
  t.end();
});

t.test('default list: exactly the AES-GCM suites, all parseable', (t) => {
  const p = parseCipherPolicy(DEFAULT_KTLS_CIPHERS);
  t.ok(p.entries.length >= 8);
  for (const e of p.entries) t.match(e.suite.kernelCipher, /^AES_GCM_/);
  t.equal(p.lookup('TLS_CHACHA20_POLY1305_SHA256'), undefined);
  t.equal(p.lookup('TLS_AES_128_CCM_SHA256'), undefined);
  t.end();
});

t.test('every OpenSSL name in the table is one Node/OpenSSL knows', (t) => {
  // Guards typos in the table against the real OpenSSL this Node links.
  // Node's getCiphers() omits the CCM suites; the openssl CLI lists them.
  const cli = execFileSync('openssl', ['ciphers', 'ALL:COMPLEMENTOFALL'], { encoding: 'utf8' }).trim().split(':');
  const known = new Set([...tls.getCiphers(), ...cli].map((c) => c.toUpperCase()));
  for (const s of allSuites()) t.ok(known.has(s.opensslName.toUpperCase()), s.opensslName);
  t.end();
});

t.test('cipherPolicyOf caches and passes a parsed policy through', (t) => {
  const arr = ['TLS_AES_128_GCM_SHA256'];
  t.equal(cipherPolicyOf(arr), cipherPolicyOf(arr));
  const p = parseCipherPolicy(arr);
  t.equal(cipherPolicyOf(p), p);
  t.equal(findOffloadableSuite('ecdhe-ecdsa-aes128-ccm')?.code, 0xc0ac);
  t.end();
});

t.test('resolved rules from proxy/config are accepted as a policy', (t) => {
  const rules = [
    { name: 'ECDHE-RSA-AES128-GCM-SHA256', iana: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', openssl: 'ECDHE-RSA-AES128-GCM-SHA256', direction: 'txrx' as const },
    { name: 'TLS_AES_128_GCM_SHA256:tx', iana: 'TLS_AES_128_GCM_SHA256', openssl: 'TLS_AES_128_GCM_SHA256', direction: 'tx' as const },
  ];
  const p = cipherPolicyOf(rules);
  t.equal(p.lookup('ECDHE-RSA-AES128-GCM-SHA256')?.direction, 'txrx');
  t.equal(p.lookup('TLS_AES_128_GCM_SHA256')?.direction, 'tx');
  t.equal(p.lookup('TLS_AES_256_GCM_SHA384'), undefined);
  t.equal(cipherPolicyOf(rules), p);
  t.equal(badEntryOf(() => policyFromRules([{ iana: 'TLS_NOPE', direction: 'tx' }])), 1);
  t.end();
});
