// /proc/net/tls_stat parsing: every counter, whatever the kernel version.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTlsStat, readTlsStat, readTlsStatSync } from '../../proxy/ktls/tls-stat.js';

// As printed by Debian's 6.1.0 (12 counters) and 7.3.4 (rekey counters added).
const STAT_61 = `TlsCurrTxSw                     	0
TlsCurrRxSw                     	0
TlsCurrTxDevice                 	0
TlsCurrRxDevice                 	0
TlsTxSw                         	3
TlsRxSw                         	2
TlsTxDevice                     	0
TlsRxDevice                     	0
TlsDecryptError                 	1
TlsRxDeviceResync               	0
TlsDecryptRetry                 	0
TlsRxNoPadViolation             	0
`;
const STAT_7X = `${STAT_61}TlsRxRekeyOk                    \t5
TlsRxRekeyError                 \t0
TlsTxRekeyOk                    \t6
TlsTxRekeyError                 \t0
TlsRxRekeyReceived              \t5
`;

t.test('a 6.1 file: all 12 counters in order with their values', (t) => {
  const s = parseTlsStat(STAT_61);
  t.equal(Object.keys(s).length, 12);
  t.equal(Object.keys(s)[0], 'TlsCurrTxSw');
  t.match(s, { TlsTxSw: 3, TlsRxSw: 2, TlsDecryptError: 1, TlsRxNoPadViolation: 0 });
  t.end();
});

t.test('a 7.x file: the rekey counters are there too, without a fixed list', (t) => {
  const s = parseTlsStat(STAT_7X);
  t.equal(Object.keys(s).length, 17);
  t.match(s, { TlsTxRekeyOk: 6, TlsRxRekeyOk: 5, TlsRxRekeyReceived: 5 });
  t.end();
});

t.test('unknown future counters are kept; malformed lines are skipped', (t) => {
  const s = parseTlsStat('TlsSomethingNew 42\n\ngarbage\nTlsNeg -1\nTlsBig 9007199254740991\n  TlsIndented\t7  \n');
  t.same(s, { TlsSomethingNew: 42, TlsBig: 9007199254740991, TlsIndented: 7 });
  t.same(parseTlsStat(''), {});
  t.end();
});

t.test('reading: a missing file is null (module not loaded), a present one is parsed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tls-stat-'));
  t.equal(await readTlsStat(join(dir, 'absent')), null);
  t.equal(readTlsStatSync(join(dir, 'absent')), null);
  const f = join(dir, 'tls_stat');
  writeFileSync(f, STAT_61);
  t.match(await readTlsStat(f), { TlsTxSw: 3 });
  t.match(readTlsStatSync(f), { TlsRxSw: 2 });
});
