import t from 'tap';
import { tls12KeyBlock, tls12Prf } from '../../proxy/tls/prf.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// The widely used TLS 1.2 PRF test vector for P_SHA256 (secret, "test label", seed → 100 bytes).
const SECRET = '9bbe436ba940f017b17652849a71db35';
const SEED = 'a0ba9f936cda311827a6f796ffd5198c';
const OUTPUT =
  'e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7' +
  '077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66';

t.test('TLS 1.2 PRF with P_SHA256 matches the published vector', (t) => {
  const out = tls12Prf('sha256', hex(SECRET), 'test label', hex(SEED), 100);
  t.equal(out.toString('hex'), OUTPUT);
  t.end();
});

t.test('PRF output is a prefix-stable stream (shorter output = prefix)', (t) => {
  const out = tls12Prf('sha256', hex(SECRET), 'test label', hex(SEED), 13);
  t.equal(out.toString('hex'), OUTPUT.slice(0, 26));
  t.end();
});

t.test('key block splits client key | server key | client IV | server IV (AEAD: no MAC keys)', (t) => {
  const master = Buffer.alloc(48, 0x42);
  const cr = Buffer.alloc(32, 1);
  const sr = Buffer.alloc(32, 2);
  const block = tls12Prf('sha384', master, 'key expansion', Buffer.concat([sr, cr]), 2 * 32 + 2 * 4);
  const kb = tls12KeyBlock('sha384', master, cr, sr, 32, 4);
  t.same(kb.clientWriteKey, block.subarray(0, 32));
  t.same(kb.serverWriteKey, block.subarray(32, 64));
  t.same(kb.clientWriteIv, block.subarray(64, 68));
  t.same(kb.serverWriteIv, block.subarray(68, 72));
  t.end();
});

t.test('key block for ChaCha20 has 12-byte write IVs', (t) => {
  const kb = tls12KeyBlock('sha256', Buffer.alloc(48, 1), Buffer.alloc(32, 3), Buffer.alloc(32, 4), 32, 12);
  t.equal(kb.clientWriteIv.length, 12);
  t.equal(kb.serverWriteIv.length, 12);
  t.end();
});
