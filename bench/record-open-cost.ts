// What opening one client record in JS costs on a real CPU: the per-request work of a kTLS `tx` connection's RX
// (proxy/record-layer/js-sides.ts JsRx), minus the recv. Each record is copied into one shared receive buffer and
// handed to RecordReader.pushTransient(), as JsRx does with the addon's recv, then its event is taken with next().
// The records are sealed beforehand, so the figure is framing, nonce, the addon's AEAD open, the inner type and the
// event. A small request's record (150 bytes, as wrk's GET /1k) by default.
//
//   taskset -c 1 node --import tsx bench/record-open-cost.ts [--bytes 150] [--records 200000] [--runs 7]
//
// Prints ns per record, median [min..max] of the runs after two unmeasured ones, per TLS version and cipher.
import { parseArgs } from 'node:util';
import type { KernelCipher, TlsVersion } from '../native/crypto-info.js';
import { nativeStatus } from '../native/index.js';
import { ContentType } from '../proxy/tls/control.js';
import { RecordProtection } from '../proxy/tls/record-protection.js';
import { RecordReader } from '../proxy/tls/records.js';
import { AEAD_PARAMS } from '../proxy/tls/suites.js';

const { values } = parseArgs({
  options: { bytes: { type: 'string', default: '150' }, records: { type: 'string', default: '200000' }, runs: { type: 'string', default: '7' } },
});
const BYTES = Number(values.bytes);
const RECORDS = Number(values.records);
const RUNS = Number(values.runs);
for (const [name, v] of [['--bytes', BYTES], ['--records', RECORDS], ['--runs', RUNS]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
}
if (BYTES > 16_384) throw new Error('--bytes must fit one record (at most 16384)');

const CASES: ReadonlyArray<[TlsVersion, KernelCipher]> = [
  ['TLSv1.3', 'AES_GCM_128'],
  ['TLSv1.3', 'AES_GCM_256'],
  ['TLSv1.3', 'CHACHA20_POLY1305'],
  ['TLSv1.2', 'AES_GCM_128'],
];

/** Both ends of one direction, from fixed key material (a benchmark, not a secret). */
function direction(version: TlsVersion, cipher: KernelCipher): () => RecordProtection {
  const p = AEAD_PARAMS[cipher];
  if (version === 'TLSv1.3') {
    const secret = Buffer.alloc(p.tls13Hash === 'sha384' ? 48 : 32, 7);
    return () => RecordProtection.tls13(cipher, secret);
  }
  const key = Buffer.alloc(p.keyLength, 3);
  const writeIv = Buffer.alloc(p.tls12FixedIvLength, 5);
  return () => RecordProtection.tls12({ cipher, key, writeIv, seq: 1n, explicitNonce: 1n });
}

/** ns per record for one run over `records`, through a fresh reader. */
function run(make: () => RecordProtection, records: Buffer[]): number {
  const reader = new RecordReader(make());
  const scratch = Buffer.alloc(65_536);
  const start = process.hrtime.bigint();
  for (const rec of records) {
    const n = rec.copy(scratch);
    reader.pushTransient(scratch.subarray(0, n));
    const ev = reader.next();
    if (ev?.kind !== 'data' || ev.data.length !== BYTES) throw new Error(`record did not open: ${JSON.stringify(ev)}`);
  }
  return Number(process.hrtime.bigint() - start) / records.length;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const status = nativeStatus();
process.stdout.write(`opening a ${BYTES}-byte record in JS, ${RECORDS} records per run, ${RUNS} runs; node ${process.version}; ` +
  `AEAD: ${status.available ? "the addon's context per key" : `createDecipheriv per record (${status.reason})`}\n\n`);
process.stdout.write('| version | cipher | ns/record |\n|---|---|---|\n');
const plaintext = Buffer.alloc(BYTES, 0x41);
for (const [version, cipher] of CASES) {
  const make = direction(version, cipher);
  const sender = make();
  const records = Array.from({ length: RECORDS }, () => sender.seal(ContentType.APPLICATION_DATA, plaintext));
  run(make, records);
  run(make, records);
  const xs = Array.from({ length: RUNS }, () => run(make, records));
  process.stdout.write(`| ${version} | ${cipher} | ${median(xs).toFixed(0)} [${Math.min(...xs).toFixed(0)}..${Math.max(...xs).toFixed(0)}] |\n`);
}
