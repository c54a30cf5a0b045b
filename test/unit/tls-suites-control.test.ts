import { execFileSync } from 'node:child_process';
import t from 'tap';
import { AlertDescription, buildAlert, buildKeyUpdate, HandshakeType, parseAlert, parseKeyUpdate } from '../../proxy/tls/control.js';
import { allSuites, suiteByCode, suiteByName } from '../../proxy/tls/suites.js';

t.test('every suite has the code point and name the openssl CLI reports for it', (t) => {
  // `openssl ciphers -V` prints "0xC0,0x2F - ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 ..."
  const tls13 = allSuites().filter((s) => s.version === 'TLSv1.3').map((s) => s.opensslName).join(':');
  const out = execFileSync('openssl', ['ciphers', '-V', '-ciphersuites', tls13, 'ALL:COMPLEMENTOFALL'], { encoding: 'latin1' });
  const byName = new Map<string, number>();
  for (const m of out.matchAll(/0x([0-9A-F]{2}),0x([0-9A-F]{2}) - (\S+)/g)) {
    byName.set(m[3] ?? '', parseInt(`${m[1]}${m[2]}`, 16));
  }
  for (const s of allSuites()) t.equal(byName.get(s.opensslName), s.code, s.opensslName);
  t.end();
});

t.test('suites map to the kernel cipher of their AEAD and CBC/CCM_8 to none', (t) => {
  t.equal(suiteByCode(0x1301)?.kernelCipher, 'AES_GCM_128');
  t.equal(suiteByCode(0x1302)?.kernelCipher, 'AES_GCM_256');
  t.equal(suiteByCode(0x1303)?.kernelCipher, 'CHACHA20_POLY1305');
  t.equal(suiteByName('ECDHE-RSA-AES256-GCM-SHA384')?.kernelCipher, 'AES_GCM_256');
  t.equal(suiteByName('ECDHE-ECDSA-AES128-CCM')?.kernelCipher, 'AES_CCM_128');
  t.equal(suiteByName('ECDHE-RSA-AES128-SHA256')?.kernelCipher, null);
  t.equal(suiteByName('TLS_AES_128_CCM_8_SHA256')?.kernelCipher, null);
  t.equal(suiteByName('TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256')?.opensslName, 'ECDHE-RSA-CHACHA20-POLY1305');
  t.equal(suiteByCode(0xffff), undefined);
  t.end();
});

t.test('the offloadable TLS 1.2 list has only AEAD suites', (t) => {
  const list = allSuites().filter((s) => s.version === 'TLSv1.2' && s.kernelCipher !== null).map((s) => s.opensslName);
  t.ok(list.includes('ECDHE-RSA-AES128-GCM-SHA256'));
  t.notOk(list.some((n) => /SHA$|SHA256$|SHA384$/.test(n) && !/GCM|CHACHA/.test(n)));
  t.end();
});

t.test('alerts: build and parse, malformed rejected', (t) => {
  t.same(parseAlert(buildAlert(1, AlertDescription.CLOSE_NOTIFY)), { level: 1, description: 0 });
  t.equal(parseAlert(Buffer.from([2])), null);
  t.end();
});

t.test('KeyUpdate: message bytes and parse of request_update', (t) => {
  t.equal(buildKeyUpdate(true).toString('hex'), '1800000101');
  t.equal(buildKeyUpdate(false).toString('hex'), '1800000100');
  t.equal(buildKeyUpdate(false)[0], HandshakeType.KEY_UPDATE);
  t.equal(parseKeyUpdate(Buffer.from([1])), true);
  t.equal(parseKeyUpdate(Buffer.from([0])), false);
  t.equal(parseKeyUpdate(Buffer.from([2])), null);
  t.equal(parseKeyUpdate(Buffer.from([0, 0])), null);
  t.end();
});
