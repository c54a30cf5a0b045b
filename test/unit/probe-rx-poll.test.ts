// The probe's verdict on kTLS RX readiness (rxPollVerdict): whole records only
// when the kernel answered both ways the trial asks, never on doubt.
import t from 'tap';
import { rxPollVerdict } from '../../proxy/ktls/probe.js';

t.test('whole-record readiness: not readable with part of a record, readable with all of it', (t) => {
  const v = rxPollVerdict({ partialReadable: false, wholeReadable: true });
  t.equal(v.wholeRecords, true);
  t.match(v.note, /short read ends a wakeup/);
  t.end();
});

t.test('readable with part of a record (6.1): read until EAGAIN', (t) => {
  const v = rxPollVerdict({ partialReadable: true, wholeReadable: true });
  t.equal(v.wholeRecords, false);
  t.match(v.note, /part of a record/);
  t.end();
});

t.test('never readable: the control failed, so the first answer proves nothing', (t) => {
  const v = rxPollVerdict({ partialReadable: false, wholeReadable: false });
  t.equal(v.wholeRecords, false);
  t.match(v.note, /not readable even with a whole record/);
  t.end();
});

t.test('not tried (no TLS 1.3 AES-GCM-128 RX, no addon)', (t) => {
  const v = rxPollVerdict(undefined);
  t.same(v, { wholeRecords: false, partialReadable: null, wholeReadable: null, note: v.note });
  t.match(v.note, /not tried/);
  t.end();
});
