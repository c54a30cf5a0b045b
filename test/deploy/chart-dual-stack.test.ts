// sidecar.bindAddress "::" (dual-stack clusters): the chart writes it to listen.host and admin.host,
// the sidecar's config loader takes it, and one "::" socket accepts IPv4 and IPv6 clients (Linux,
// net.ipv6.bindv6only=0, the default). Checked against the real sidecar.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { parse } from 'yaml';
import { find, lint, render } from './helpers/render.js';
import { startSidecar } from '../helpers/sidecar.js';

function bindV6Only(): string {
  try {
    return readFileSync('/proc/sys/net/ipv6/bindv6only', 'utf8').trim();
  } catch {
    return 'unavailable';
  }
}

/** One TLS handshake to host:port; resolves with the negotiated protocol. */
function handshake(host: string, port: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, rejectUnauthorized: false, servername: 'localhost' }, () => {
      const p = s.getProtocol();
      s.end();
      resolve(p);
    });
    s.setTimeout(10_000, () => s.destroy(new Error(`timeout to ${host}:${port}`)));
    s.on('error', reject);
  });
}

t.test('bindAddress "::" reaches listen.host and admin.host; other values are refused', async (t) => {
  const cm = find(await render({ set: { 'sidecar.bindAddress': '::' } }), 'ConfigMap', '-config');
  const cfg = parse((cm['data'] as Record<string, string>)['config.yaml'] ?? '') as Record<string, { host?: string }>;
  t.equal(cfg['listen']?.host, '::');
  t.equal(cfg['admin']?.host, '::');
  const bad = await lint({ set: { 'sidecar.bindAddress': '10.0.0.1' } });
  t.not(bad.code, 0, 'a pod IP is unknown at render time: only the wildcard addresses');
  t.match(bad.output, /sidecar\/bindAddress/);
});

t.test('the sidecar on "::" accepts IPv4 and IPv6 clients on one port', { skip: bindV6Only() !== '0' ? `net.ipv6.bindv6only is ${bindV6Only()}` : false }, async (t) => {
  const sc = await startSidecar(['--demo', '--listen-host', '::']);
  t.teardown(() => sc.stop());
  t.equal(await handshake('127.0.0.1', sc.tlsPort), 'TLSv1.3', 'IPv4 client (as ::ffff:127.0.0.1)');
  t.equal(await handshake('::1', sc.tlsPort), 'TLSv1.3', 'IPv6 client');
});
