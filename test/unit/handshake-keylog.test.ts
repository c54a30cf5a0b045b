import t from 'tap';
import { parseKeylogLine } from '../../proxy/handshake/keylog.js';

const CR = 'ab'.repeat(32);

t.test('parses a TLS 1.3 traffic secret line', (t) => {
  const e = parseKeylogLine(Buffer.from(`SERVER_TRAFFIC_SECRET_0 ${CR} ${'0f'.repeat(32)}\n`));
  t.equal(e?.label, 'SERVER_TRAFFIC_SECRET_0');
  t.equal(e?.clientRandom.toString('hex'), CR);
  t.equal(e?.secret.toString('hex'), '0f'.repeat(32));
  t.end();
});

t.test('parses a TLS 1.2 master secret line (48 bytes, upper-case hex)', (t) => {
  const e = parseKeylogLine(Buffer.from(`CLIENT_RANDOM ${CR.toUpperCase()} ${'A1'.repeat(48)}`));
  t.equal(e?.label, 'CLIENT_RANDOM');
  t.equal(e?.secret.length, 48);
  t.end();
});

t.test('ignores labels the engine does not use', (t) => {
  t.equal(parseKeylogLine(Buffer.from(`EXPORTER_SECRET ${CR} ${'00'.repeat(32)}\n`)), null);
  t.end();
});

t.test('rejects malformed lines', (t) => {
  t.equal(parseKeylogLine(Buffer.from(`CLIENT_RANDOM ${CR}`)), null, 'no secret');
  t.equal(parseKeylogLine(Buffer.from(`CLIENT_RANDOM ${'ab'.repeat(31)} ${'00'.repeat(48)}`)), null, 'short random');
  t.equal(parseKeylogLine(Buffer.from(`CLIENT_RANDOM ${CR} ${'zz'.repeat(48)}`)), null, 'not hex');
  t.equal(parseKeylogLine(Buffer.from(`CLIENT_RANDOM ${CR} ${'00'.repeat(20)}`)), null, 'odd secret size');
  t.end();
});
