// The REAL sidecar for kernel-lab end-to-end tests: the CLI as a child
// process with a YAML config file (every port 0), waiting for /readyz, with
// /metrics, PUT /ktls and the JSON log lines at hand.
//
// Which CLI: in the lab, build-tests.mjs compiles proxy/** next to this file's
// compiled copy (node_modules/.cache/ktls-sidecar-lab/build/proxy/cli.js), so
// the guest runs plain JS; from the .ts sources on the host it is
// `node --import tsx proxy/cli.ts`. Following the child (logs, startup ports,
// admin requests) is shared with the host helper: test/helpers/child-sidecar.ts.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { probeKernel } from '../../../proxy/ktls/probe.js';
import { type LogLine, adminRequest, childEnv, followChild } from '../../helpers/child-sidecar.js';
import { metricValue } from '../../helpers/metrics.js';
import { makePki, type Pki } from '../../helpers/pki.js';
import type { Teardown } from '../../helpers/teardown.js';
import { startUpstream } from '../../helpers/upstream.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cliJs = path.resolve(here, '../../../proxy/cli.js');
const cliTs = path.resolve(here, '../../../proxy/cli.ts');

export const inLab = process.env['KTLS_LAB'] === '1';
export const labSkip: string | false = inLab ? false : 'not in the kernel lab VM (run `npm run test:kernel`)';

export type LabLogLine = LogLine;

export interface LabSidecar {
  proc: ChildProcess;
  tlsPort: number;
  adminPort: number;
  logs: LabLogLine[];
  stderr(): string;
  metrics(): Promise<string>;
  /** Sum of the series of `name` whose labels include `labels`. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  admin(method: string, pathname: string, body?: string): Promise<{ status: number; body: string }>;
  setKtls(enabled: boolean): Promise<void>;
  waitForLog(pred: (l: LabLogLine) => boolean, timeoutMs?: number): Promise<LabLogLine>;
  stop(): Promise<void>;
}

export type { Teardown };

let sharedPki: Pki | undefined;
/** One test PKI per test process (EC P-256: TLS 1.2 suites are ECDHE-ECDSA). */
export function labPki(t?: Teardown): Pki {
  if (!sharedPki) {
    sharedPki = makePki();
    const p = sharedPki;
    process.once('exit', () => p.cleanup());
  }
  void t;
  return sharedPki;
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    if (v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)) {
      out[k] = deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>);
    } else {
      out[k] = v;
    }
  }
  return out;
}

/**
 * Start the sidecar with `config` merged over a base (127.0.0.1, ports 0,
 * the lab PKI, config watch off). Resolves once /readyz answers 200.
 */
export async function startLabSidecar(t: Teardown, config: Record<string, unknown>): Promise<LabSidecar> {
  const pki = labPki();
  const base = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.server.cert, key: pki.server.key },
    log: { level: 'info' },
    config: { watch: false },
  };
  const dir = mkdtempSync(path.join(tmpdir(), 'sidecar-lab-'));
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, stringify(deepMerge(base, config)));
  const useJs = existsSync(cliJs);
  const args = useJs ? [cliJs, '--config', file] : ['--import', 'tsx', cliTs, '--config', file];
  const proc = spawn(process.execPath, args, { cwd: path.resolve(here, '../../..'), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const { logs, stderr, exited, waitForLog, startup } = followChild(proc, 120_000);
  const port = await startup();
  const tlsPort = Number(port('tls'));
  const adminPort = Number(port('admin'));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  t.teardown(stop);
  // Ready = listening, certificates, upstream reachable (the test starts it first).
  for (;;) {
    const r = await adminRequest(adminPort, 'GET', '/readyz').catch(() => ({ status: 0, body: '' }));
    if (r.status === 200) break;
    if (proc.exitCode !== null) throw new Error(`sidecar exited: ${stderr().slice(-2000)}`);
    await new Promise((res) => setTimeout(res, 200));
  }
  const metrics = async (): Promise<string> => (await adminRequest(adminPort, 'GET', '/metrics')).body;
  return {
    proc,
    tlsPort,
    adminPort,
    logs,
    stderr,
    metrics,
    metric: async (name, labels = {}) => metricValue(await metrics(), name, labels),
    admin: (method, pathname, body) => adminRequest(adminPort, method, pathname, body),
    setKtls: async (enabled) => {
      const r = await adminRequest(adminPort, 'PUT', '/ktls', JSON.stringify({ enabled }));
      if (r.status !== 200) throw new Error(`PUT /ktls ${r.status}: ${r.body}`);
    },
    waitForLog,
    stop,
  };
}

/**
 * The common start of the HTTP-mode tests on kTLS: assert that the kernel holds
 * TLS 1.3 AES-128-GCM (what their clients negotiate), then start the test
 * upstream and the sidecar in front of it with this `ktls` section.
 */
export async function startHttpLabSidecar(t: Teardown & { ok(value: unknown, message: string): unknown }, ktls: Record<string, unknown>): Promise<LabSidecar> {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  return startLabSidecar(t, { upstream: { url: upstream.url }, ktls });
}

/** /proc/net/tls_stat as numbers ({} without the file). */
export function tlsStat(): Record<string, number> {
  const out: Record<string, number> = {};
  if (!existsSync('/proc/net/tls_stat')) return out;
  for (const line of readFileSync('/proc/net/tls_stat', 'utf8').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v) out[k] = Number(v);
  }
  return out;
}

/** A field of a connection_closed line, at the top level or in its ktls_info. */
export function closeField(l: LabLogLine, key: string): unknown {
  if (key in l) return l[key];
  const info = l['ktls_info'];
  return info && typeof info === 'object' ? (info as Record<string, unknown>)[key] : undefined;
}

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Run a client program to completion (curl, openssl). */
export function run(cmd: string, args: string[], timeoutMs = 180_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
  });
}

// ---- suites ------------------------------------------------------------------------

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';
export type KernelCipherName = 'AES_GCM_128' | 'AES_GCM_256' | 'CHACHA20_POLY1305';

export interface Suite {
  version: TlsVersion;
  /** IANA name: what `ktls.ciphers` takes and the `cipher` label shows. */
  iana: string;
  /** What the client is told to offer (OpenSSL name for TLS 1.2). */
  openssl: string;
  kernel: KernelCipherName;
}

/** The AEAD suites kTLS can hold (ECDSA certificate for TLS 1.2). */
export const SUITES: readonly Suite[] = [
  { version: 'TLSv1.3', iana: 'TLS_AES_128_GCM_SHA256', openssl: 'TLS_AES_128_GCM_SHA256', kernel: 'AES_GCM_128' },
  { version: 'TLSv1.3', iana: 'TLS_AES_256_GCM_SHA384', openssl: 'TLS_AES_256_GCM_SHA384', kernel: 'AES_GCM_256' },
  { version: 'TLSv1.3', iana: 'TLS_CHACHA20_POLY1305_SHA256', openssl: 'TLS_CHACHA20_POLY1305_SHA256', kernel: 'CHACHA20_POLY1305' },
  { version: 'TLSv1.2', iana: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', openssl: 'ECDHE-ECDSA-AES128-GCM-SHA256', kernel: 'AES_GCM_128' },
  { version: 'TLSv1.2', iana: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', openssl: 'ECDHE-ECDSA-AES256-GCM-SHA384', kernel: 'AES_GCM_256' },
  { version: 'TLSv1.2', iana: 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', openssl: 'ECDHE-ECDSA-CHACHA20-POLY1305', kernel: 'CHACHA20_POLY1305' },
];

/** curl flags that pin one suite and version. */
export function curlTlsArgs(s: Suite): string[] {
  return s.version === 'TLSv1.3'
    ? ['--tlsv1.3', '--tls-max', '1.3', '--tls13-ciphers', s.openssl]
    : ['--tlsv1.2', '--tls-max', '1.2', '--ciphers', s.openssl];
}

/** curl against the sidecar as https://localhost:PORT (verified with the lab CA). */
export function curlBase(port: number): string[] {
  return ['-sS', '--fail', '--cacert', labPki().caCert, '--resolve', `localhost:${port}:127.0.0.1`];
}
