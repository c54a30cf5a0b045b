// The one handshake-failure classifier (proxy/handshake/failure.ts): Node's
// TLS errors from either path, and the engine's HandshakeError, all end as a
// label of proxy/vocabulary.ts.
import t from 'tap';
import { HandshakeError, alertFailureReason, classifyHandshakeFailure, engineFailureReason, tlsErrorReason } from '../../proxy/handshake/failure.js';
import { HANDSHAKE_FAILURE_REASONS } from '../../proxy/vocabulary.js';

/** An error as Node's TLS server reports it in 'tlsClientError'. */
function sslError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const failure = (reason: string) => ({ kind: 'handshake_failure', reason });

t.test('TLSSocket handshake errors map to a metric reason; malformed ClientHellos are protocol_error', (t) => {
  const malformed: [string, string][] = [
    ['ERR_SSL_UNEXPECTED_MESSAGE', 'ossl_statem_server_read_transition:unexpected message'],
    ['ERR_SSL_LENGTH_MISMATCH', 'tls_process_client_hello:length mismatch'],
    ['ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ssl3_get_record:packet length too long'],
    ['ERR_SSL_WRONG_VERSION_NUMBER', 'ssl3_get_record:wrong version number'],
    // The function name says "versions"; the reason says the bytes were bad.
    ['ERR_SSL_BAD_EXTENSION', 'tls_parse_ctos_supported_versions:bad extension'],
    ['ERR_SSL_RECORD_LAYER_FAILURE', 'ssl3_read_bytes:record layer failure'],
  ];
  for (const [code, message] of malformed) t.same(classifyHandshakeFailure(sslError(code, message)), failure('protocol_error'), code);
  const cases: [Error, string][] = [
    [sslError('ERR_SSL_UNSUPPORTED_PROTOCOL', 'unsupported protocol'), 'protocol_version'],
    [sslError('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'tlsv1 alert protocol version'), 'protocol_version'],
    [sslError('ERR_SSL_NO_SHARED_CIPHER', 'no shared cipher'), 'no_shared_cipher'],
    [sslError('ERR_SSL_NO_APPLICATION_PROTOCOL', 'no application protocol'), 'no_application_protocol'],
    [sslError('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', 'peer did not return a certificate'), 'client_cert_required'],
    [sslError('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'sslv3 alert bad certificate'), 'peer_alert'],
    [sslError('ERR_SSL_CERTIFICATE_VERIFY_FAILED', 'certificate verify failed'), 'client_cert_invalid'],
    [sslError('ERR_SSL_INTERNAL_ERROR', 'internal error'), 'internal_error'],
    [sslError('ERR_TLS_HANDSHAKE_TIMEOUT', 'TLS handshake timeout'), 'timeout'],
    [sslError('ECONNRESET', 'read ECONNRESET'), 'reset'],
    [sslError('EPIPE', 'write EPIPE'), 'reset'],
    [new Error('Client network socket disconnected before secure TLS connection was established'), 'reset'],
  ];
  for (const [err, reason] of cases) t.same(classifyHandshakeFailure(err), failure(reason), `${(err as { code?: string }).code ?? err.message}`);
  t.same(classifyHandshakeFailure(new Error('something else entirely')), failure('other'), 'not from OpenSSL: other');
  t.same(classifyHandshakeFailure('a string'), failure('other'), 'not even an Error: other');
  t.same(classifyHandshakeFailure(null), failure('other'));
  t.end();
});

t.test('the engine\'s HandshakeError carries its label; the buffer limit is a rejection', (t) => {
  t.same(classifyHandshakeFailure(new HandshakeError('handshake_buffer_limit', 'x')), { kind: 'rejected', reason: 'handshake_buffer_limit' });
  for (const reason of HANDSHAKE_FAILURE_REASONS) {
    t.same(classifyHandshakeFailure(new HandshakeError(reason, 'x')), failure(reason), reason);
  }
  t.end();
});

t.test('HandshakeError codes: LIMIT for the buffer limit, NOT_TLS for an unframeable first record, else HANDSHAKE', (t) => {
  t.equal(new HandshakeError('handshake_buffer_limit', 'x').code, 'ERR_KTLS_SIDECAR_LIMIT');
  // The sniff passed a 0x16 first: a record header the engine cannot frame is a malformed ClientHello.
  const notTls = new HandshakeError('protocol_error', 'not a TLS record', { notTls: true });
  t.equal(notTls.code, 'ERR_KTLS_SIDECAR_NOT_TLS');
  t.same(classifyHandshakeFailure(notTls), failure('protocol_error'));
  t.equal(new HandshakeError('reset', 'x').code, 'ERR_KTLS_SIDECAR_HANDSHAKE');
  const cause = new Error('inner');
  const e = new HandshakeError('timeout', 'no result within 5 ms', { cause });
  t.equal(e.cause, cause);
  t.equal(e.message, 'timeout: no result within 5 ms');
  t.notOk('cause' in new HandshakeError('timeout', 'x'), 'no cause property without a cause');
  t.end();
});

t.test('tlsErrorReason says `other` when OpenSSL names no cause (the engine then reads the wire)', (t) => {
  t.equal(tlsErrorReason(new Error('socket hang up')), 'other');
  t.equal(tlsErrorReason(sslError('ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC', 'bad record mac')), 'protocol_error');
  t.end();
});

t.test('a fatal alert the server sent maps to the failure it stands for', (t) => {
  t.equal(alertFailureReason(40), 'no_shared_cipher', 'handshake_failure');
  t.equal(alertFailureReason(70), 'protocol_version', 'protocol_version');
  for (const d of [42, 43, 44, 45, 46, 48, 116]) t.equal(alertFailureReason(d), 'client_cert_invalid', `certificate alert ${d}`);
  for (const d of [10, 20, 47, 50, 80]) t.equal(alertFailureReason(d), 'protocol_error', `alert ${d}`);
  t.end();
});

t.test('engine failures: OpenSSL\'s error when it names a cause, else what the engine saw on the wire', (t) => {
  const quiet = { certRejected: false, serverAlert: null, clientAlert: false, peerClosedCleanly: false };
  t.equal(engineFailureReason(sslError('ERR_SSL_NO_SHARED_CIPHER', 'no shared cipher'), { ...quiet, clientAlert: true }), 'no_shared_cipher');
  t.equal(engineFailureReason(sslError('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'tlsv1 alert unknown ca'), quiet), 'peer_alert');
  // No cause named (protocol_error / other, or no error at all): the wire decides, in this order.
  for (const err of [sslError('ERR_SSL_UNEXPECTED_MESSAGE', 'unexpected message'), new Error('no code'), undefined]) {
    t.equal(engineFailureReason(err, { ...quiet, certRejected: true, serverAlert: 70, clientAlert: true }), 'client_cert_invalid');
    t.equal(engineFailureReason(err, { ...quiet, serverAlert: 70, clientAlert: true }), 'protocol_version');
    t.equal(engineFailureReason(err, { ...quiet, serverAlert: 40 }), 'no_shared_cipher');
    t.equal(engineFailureReason(err, { ...quiet, clientAlert: true, peerClosedCleanly: true }), 'peer_alert');
    t.equal(engineFailureReason(err, { ...quiet, peerClosedCleanly: true }), 'reset');
    t.equal(engineFailureReason(err, quiet), 'protocol_error', 'malformed bytes, or OpenSSL gave up: protocol_error');
  }
  t.end();
});
