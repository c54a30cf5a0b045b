// The header rules of the HTTP fronts (proxy/fronts/headers.ts) as pure
// functions: what Connection may nominate, the Forwarded element we write,
// and the requests refused before forwarding (issue 8, items 2 and 12).
import t from 'tap';
import { formatForwarded, requestProblem, setForwardingHeaders, stripHopByHop, upstreamRequestFields } from '../../proxy/fronts/headers.js';
import { upstreamPath } from '../../proxy/upstream/request-path.js';
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

t.test('upstream request fields: the client\'s as received, minus hop-by-hop, framing and forwarding fields; ours after', (t) => {
  const rawHeaders = [
    'Host', 'app.example', 'Connection', 'keep-alive, X-Private', 'X-Private', '1', 'Accept', 'a/b', 'Content-Length', '999',
    'Transfer-Encoding', 'chunked', 'X-Forwarded-For', '10.0.0.1', 'Forwarded', 'for=evil', 'X-Forwarded-Client-Cert', 'Hash=forged',
    'Set-Thing', 'one', 'Set-Thing', 'two', 'TE', 'trailers', 'Upgrade', 'h2c',
  ];
  const headers = { host: 'app.example', connection: 'keep-alive, X-Private', 'x-forwarded-for': '10.0.0.1' };
  const fields = upstreamRequestFields({ rawHeaders, headers }, facts, 'X-Forwarded-Client-Cert', 'Content-Length: 4\r\n', '127.0.0.1:8080');
  t.equal(
    fields,
    'Accept: a/b\r\nSet-Thing: one\r\nSet-Thing: two\r\nHost: app.example\r\nContent-Length: 4\r\n' +
      'x-forwarded-for: 10.0.0.1, 192.0.2.7\r\nx-forwarded-proto: https\r\nx-forwarded-host: app.example\r\n' +
      'forwarded: for=192.0.2.7;host=app.example;proto=https\r\nx-forwarded-port: 8443\r\n',
  );
  t.end();
});

t.test('upstream request fields of an HTTP/2 request: no pseudo-headers, Host from :authority, or the upstream\'s', (t) => {
  const h2 = upstreamRequestFields(
    {
      rawHeaders: [':method', 'GET', ':path', '/', ':authority', 'app.example', ':scheme', 'https', 'accept', '*/*', 'cookie', 'a=1', 'cookie', 'b=2'],
      headers: { ':authority': 'app.example', cookie: 'a=1; b=2' },
    },
    facts, 'x-forwarded-client-cert', '', 'up:1',
  );
  t.match(h2, /^accept: \*\/\*\r\nCookie: a=1; b=2\r\nHost: app\.example\r\n/, 'split cookie fields joined into one line (RFC 9113 §8.2.3)');
  t.notMatch(h2, /^:/m);
  const none = upstreamRequestFields({ rawHeaders: [], headers: {} }, facts, 'x-forwarded-client-cert', '', '127.0.0.1:8080');
  t.match(none, /^Host: 127\.0\.0\.1:8080\r\n/, 'as node\'s client did for a request without Host');
  t.end();
});

t.test('the upstream request target: normalised like the URL parser, after upstream.url\'s path', (t) => {
  t.equal(upstreamPath('/a/b?c=d', ''), '/a/b?c=d');
  t.equal(upstreamPath('/a/../b', ''), '/b');
  t.equal(upstreamPath('/a/%2e%2e/b', ''), '/b');
  t.equal(upstreamPath('/a/./b', ''), '/a/b');
  t.equal(upstreamPath('http://other.example/x?y', ''), '/x?y', 'absolute form to origin form');
  t.equal(upstreamPath("/q?a='", ''), '/q?a=%27');
  t.equal(upstreamPath('//x/y', ''), '//x/y');
  t.equal(upstreamPath('*', ''), '/*');
  t.equal(upstreamPath('/x?y=1', '/base/'), '/base/x?y=1');
  t.equal(upstreamPath('/x?y=1', '/base?k=v'), '/base/x?k=v&y=1');
  t.end();
});
