// The cipher × TLS version matrix through the real sidecar, for one ktls
// direction (sidecar-matrix-tx / sidecar-matrix-txrx run it): curl downloads
// of 0 B, 1 KiB and 4 MiB and a 1 MiB upload on one connection, byte-exact,
// with the connection's labels in /metrics and /proc/net/tls_stat moving.
// Which suites are expected on kTLS comes from the kernel probe.
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import type { KernelProbe } from '../../../proxy/ktls/probe.js';
import { patternBytes, sha256, startUpstream } from '../../helpers/upstream.js';
import { SUITES, type Suite, curlBase, curlTlsArgs, run, startLabSidecar, tlsStat } from './sidecar-lab.js';


/** The kTLS direction a connection of `suite` gets when `mode` is configured (docs/ktls.md table). */
export function expectedDirection(probe: KernelProbe, s: Suite, mode: 'tx' | 'txrx'): 'tx' | 'txrx' {
  if (mode === 'tx') return 'tx';
  if (!probe.supports(s.version, s.kernel, 'rx')) return 'tx';
  if (s.version === 'TLSv1.3' && !probe.rekey) return 'tx';
  return 'txrx';
}

export function offloadableSuites(probe: KernelProbe): Suite[] {
  return SUITES.filter((s) => probe.supports(s.version, s.kernel, 'tx'));
}

export async function fileSha(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const SIZES = [0, 1024, 4 * 1024 * 1024];
const UPLOAD = 1024 * 1024;

export async function runMatrix(t: Test, probe: KernelProbe, mode: 'tx' | 'txrx', bigOnce: boolean): Promise<void> {
  const suites = offloadableSuites(probe);
  t.ok(suites.length > 0, `kernel offloads some suite (${suites.map((s) => s.iana).join(', ')})`);
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sc = await startLabSidecar(t, {
    upstream: { url: upstream.url },
    ktls: { enabled: true, direction: mode, ciphers: suites.map((s) => s.iana) },
  });
  const dir = mkdtempSync(path.join(tmpdir(), `matrix-${mode}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const uploadFile = path.join(dir, 'upload.bin');
  const upload = patternBytes(UPLOAD, 11);
  writeFileSync(uploadFile, upload);
  const expected = new Map(SIZES.map((n) => [n, sha256(patternBytes(n, 7))]));
  const base = `https://localhost:${sc.tlsPort}`;

  for (const s of suites) {
    const direction = expectedDirection(probe, s, mode);
    await t.test(`${s.version} ${s.iana} ${mode}: byte-exact through kTLS (${direction})`, async (t) => {
      const on = { ktls: 'on', direction, cipher: s.iana, tls_version: s.version };
      const off = { ktls: 'off', cipher: s.iana, tls_version: s.version };
      const openedOn = await sc.metric('ktls_sidecar_connections_opened_total', on);
      const openedOff = await sc.metric('ktls_sidecar_connections_opened_total', off);
      const stat0 = tlsStat();
      const tls = curlTlsArgs(s);
      const args = [...curlBase(sc.tlsPort), ...tls];
      for (const n of SIZES) args.push('-o', path.join(dir, `d${n}`), `${base}/bytes?n=${n}`);
      // --next: same connection (curl reuses it), the upload as a fourth request.
      args.push('--next', ...curlBase(sc.tlsPort), ...tls, '--data-binary', `@${uploadFile}`, '-H', 'content-type: application/octet-stream', `${base}/sha`);
      const r = await run('curl', args);
      t.equal(r.code, 0, `curl ok ${r.stderr}`);
      for (const n of SIZES) t.equal(sha256(readFileSync(path.join(dir, `d${n}`))), expected.get(n), `${n} B download byte-exact`);
      const sha = JSON.parse(r.stdout.toString() || '{}') as { sha256?: string; length?: number };
      t.equal(sha.length, UPLOAD, 'upload length at the upstream');
      t.equal(sha.sha256, sha256(upload), '1 MiB upload byte-exact at the upstream');
      t.equal((await sc.metric('ktls_sidecar_connections_opened_total', on)) - openedOn, 1, `one connection ktls=on direction=${direction}`);
      t.equal((await sc.metric('ktls_sidecar_connections_opened_total', off)) - openedOff, 0, 'none in userspace');
      const stat1 = tlsStat();
      t.ok((stat1['TlsTxSw'] ?? 0) > (stat0['TlsTxSw'] ?? 0), 'TlsTxSw moved');
      if (direction === 'txrx') t.ok((stat1['TlsRxSw'] ?? 0) > (stat0['TlsRxSw'] ?? 0), 'TlsRxSw moved');
    });
  }

  if (bigOnce) {
    const s = suites[0];
    if (!s) return;
    await t.test(`${s.version} ${s.iana} ${mode}: 64 MiB download byte-exact`, async (t) => {
      const n = 64 * 1024 * 1024;
      const out = path.join(dir, 'big');
      const want = sha256(patternBytes(n, 7));
      const on = { ktls: 'on', cipher: s.iana, tls_version: s.version };
      const before = await sc.metric('ktls_sidecar_bytes_sent_total', on);
      const r = await run('curl', [...curlBase(sc.tlsPort), ...curlTlsArgs(s), '-o', out, `${base}/bytes?n=${n}`], 600_000);
      t.equal(r.code, 0, `curl ok ${r.stderr}`);
      t.equal(await fileSha(out), want, '64 MiB byte-exact');
      rmSync(out, { force: true });
      t.ok((await sc.metric('ktls_sidecar_bytes_sent_total', on)) - before >= n, 'bytes counted on ktls="on"');
    });
  }
}
