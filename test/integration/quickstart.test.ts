// The quickstart: `ktls-sidecar --demo` serves at once with a self-signed
// in-memory certificate and the built-in demo upstream (curl -k), warns loudly,
// and /metrics counts the request. Ports are 0 here; `npm start` uses 8443/9901.
import { execFile } from 'node:child_process';
import t from 'tap';
import { metricValue } from '../helpers/metrics.js';
import { runCli, startSidecar } from '../helpers/sidecar.js';

function curl(args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['--noproxy', '*', '-sS', ...args], (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }));
  });
}

// The short CLI runs start now, in parallel with the demo test below.
const badPort = runCli(['--listen-port', '70000']);
const badCert = runCli(['--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem']);
const version = runCli(['--version']);

t.test('--demo serves the demo upstream over TLS (curl -k)', async (t) => {
  const sc = await startSidecar(['--demo', '--upstream-url', 'http://127.0.0.1:0']);
  t.teardown(() => sc.stop());
  const r = await curl(['-k', `https://localhost:${sc.tlsPort}/quickstart`]);
  t.equal(r.code, 0);
  t.match(r.stdout, /Hello from the ktls-sidecar demo upstream/);
  t.match(r.stdout, /path=\/quickstart/);
  t.match(r.stdout, /x-forwarded-proto=https/);

  t.test('the log warns about the self-signed demo certificate', async (t) => {
    const warn = await sc.waitForLog((l) => l.event === 'demo_mode');
    t.equal(warn.level, 'warn');
    t.match(String(warn.msg), /self-signed/);
  });

  t.test('/metrics counts the connection with ktls labels', async (t) => {
    const m = await sc.metrics();
    t.ok(metricValue(m, 'ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: 'kernel_no_tls', direction: 'none' }) >= 1);
    t.ok(metricValue(m, 'ktls_sidecar_http_requests_total', { status_class: '2xx' }) >= 1);
  });

  t.test('one log line per closed connection', async (t) => {
    const line = await sc.waitForLog((l) => l.event === 'connection_closed' && l['protocol'] !== 'none');
    t.equal(line['ktls'], 'off');
    t.ok(Number(line['bytes_in']) > 0, 'plaintext bytes in counted');
    t.ok(Number(line['bytes_out']) > 0, 'plaintext bytes out counted');
  });
});

t.test('a config error exits 2 with one line naming the key', async (t) => {
  const r = await badPort;
  t.equal(r.code, 2);
  const lines = r.stderr.trim().split('\n');
  t.equal(lines.length, 1, r.stderr);
  t.match(lines[0], /listen\.port/);
});

t.test('a missing certificate file exits 2 naming tls.cert', async (t) => {
  const r = await badCert;
  t.equal(r.code, 2);
  t.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.match(r.stderr, /tls\.cert/);
});

t.test('--version prints the package version', async (t) => {
  const r = await version;
  t.equal(r.code, 0);
  t.match(r.stdout.trim(), /^\d+\.\d+\.\d+/);
});
