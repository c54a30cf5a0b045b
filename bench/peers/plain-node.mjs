// bench/peers/plain-node.mjs: the "plain Node" peer of `npm run bench`, the TLS proxy a user writes in an
// afternoon: node:https + http-proxy-3 `web()` with a keep-alive http.Agent, nothing else (no limits, no
// metrics, no logging). Same certificate and TLS 1.3 suite as the other peers.
//
//   node bench/peers/plain-node.mjs PORT UPSTREAM_URL CERT KEY     prints "listening <port>" once ready
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import process from 'node:process';
import { createProxyServer } from 'http-proxy-3';

const [port, target, cert, key] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });
// xfwd: the X-Forwarded-* headers every TLS-terminating proxy adds (the sidecar and nginx peer do too).
const proxy = createProxyServer({ target, agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
const server = https.createServer(
  { cert: readFileSync(cert), key: readFileSync(key), minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' },
  (req, res) => proxy.web(req, res),
);
server.keepAliveTimeout = 60_000;
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
