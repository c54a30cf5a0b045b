// The header rules of the HTTP fronts (proxy/fronts/headers.ts) as pure
// functions: what Connection may nominate, the Forwarded element we write,
// and the requests refused before forwarding (issue 8, items 2 and 12).
import t from 'tap';
import { formatForwarded, requestProblem, setForwardingHeaders, stripHopByHop } from '../../proxy/fronts/headers.js';
import { factsFor } from '../helpers/facts.js';

const facts = factsFor(
  { remoteAddress: '::ffff:192.0.2.7', remotePort: 50000, localAddress: '127.0.0.1', localPort: 8443 },
  { servername: 'app.example', alpn: 'http/1.1', localCertHash: 'ab', localCertBy: 'spiffe://example/sidecar' },
);

t.test('Connection cannot nominate framing, Host, pseudo-headers or forwarding headers', (t) => {
  const protectedNames = ['content-length', 'host', 'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-client-cert', ':authority'];
  const headers: Record<string, string> = { connection: `keep-alive, ${protectedNames.map((n) => n.toUpperCase()).join(', ')}, x-private` };
  for (const n of protectedNames) headers[n] = 'v';
  headers['x-private'] = '1';
  stripHopByHop(headers);
  for (const n of protectedNames) t.equal(headers[n], 'v', `${n} kept`);
  t.notOk('x-private' in headers, 'an ordinary nominated header is still removed');
  t.notOk('connection' in headers);
  t.end();
});

t.test('transfer-encoding is always hop-by-hop (the forwarder re-frames), nominated or not', (t) => {
  const headers: Record<string, string> = { connection: 'transfer-encoding', 'transfer-encoding': 'chunked' };
  stripHopByHop(headers);
  t.notOk('transfer-encoding' in headers);
  t.end();
});

t.test('a response cannot drop its own Content-Length through Connection either', (t) => {
  const headers: Record<string, string> = { connection: 'content-length, x-upstream-private', 'content-length': '3', 'x-upstream-private': 's' };
  stripHopByHop(headers);
  t.equal(headers['content-length'], '3');
  t.notOk('x-upstream-private' in headers);
  t.end();
});

t.test('WebSocket handshakes keep Connection/Upgrade but not nominated extras', (t) => {
  const headers: Record<string, string> = { connection: 'Upgrade, x-private, host', upgrade: 'websocket', 'x-private': '1', host: 'h' };
  stripHopByHop(headers, true);
  t.equal(headers.connection, 'upgrade');
  t.equal(headers.upgrade, 'websocket');
  t.equal(headers.host, 'h');
  t.notOk('x-private' in headers);
  t.end();
});

t.test('formatForwarded: RFC 7239 tokens, IPv6 and host:port quoted', (t) => {
  t.equal(formatForwarded('192.0.2.7', 'app.example'), 'for=192.0.2.7;host=app.example;proto=https');
  t.equal(formatForwarded('2001:db8::1', 'app.example:8443'), 'for="[2001:db8::1]";host="app.example:8443";proto=https');
  t.equal(formatForwarded('192.0.2.7', ''), 'for=192.0.2.7;proto=https', 'no host, no host= pair');
  t.equal(formatForwarded('192.0.2.7', 'a"b\\c'), 'for=192.0.2.7;host="a\\"b\\\\c";proto=https', 'quotes and backslashes escaped');
  t.end();
});

t.test('setForwardingHeaders replaces a client Forwarded and strips the cert header', (t) => {
  const headers: Record<string, string> = { host: 'app.example', forwarded: 'for=10.6.6.6;by=admin', 'x-forwarded-client-cert': 'Hash=forged', 'x-forwarded-for': '203.0.113.9' };
  setForwardingHeaders(headers, facts, 'X-Forwarded-Client-Cert');
  t.equal(headers.forwarded, 'for=192.0.2.7;host=app.example;proto=https');
  t.equal(headers['x-forwarded-for'], '203.0.113.9, 192.0.2.7');
  t.equal(headers['x-forwarded-host'], 'app.example');
  t.notOk('x-forwarded-client-cert' in headers);
  t.end();
});

t.test('setForwardingHeaders takes the HTTP/2 :authority over Host', (t) => {
  const headers: Record<string, string> = { ':authority': 'app.example:8443', host: 'other.example' };
  setForwardingHeaders(headers, facts, 'x-forwarded-client-cert');
  t.equal(headers['x-forwarded-host'], 'app.example:8443');
  t.equal(headers.forwarded, 'for=192.0.2.7;host="app.example:8443";proto=https');
  t.end();
});

t.test('requestProblem: duplicate Host and an HTTP/2 authority mismatch', (t) => {
  t.equal(requestProblem(['Host', 'a.example', 'Accept', '*/*']), undefined);
  t.equal(requestProblem(['Host', 'a.example', 'host', 'b.example']), 'duplicate_host');
  t.equal(requestProblem(['Host', 'a.example', 'HOST', 'a.example']), 'duplicate_host', 'even with equal values');
  t.equal(requestProblem([':authority', 'a.example', 'host', 'A.Example']), undefined, 'same authority, any case');
  t.equal(requestProblem([':authority', 'a.example', 'host', 'b.example']), 'authority_mismatch');
  t.equal(requestProblem([':authority', 'a.example']), undefined);
  t.equal(requestProblem([]), undefined);
  t.end();
});
