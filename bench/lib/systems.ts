// The proxies under test: how each is configured and started, how it is checked before it is measured, and what
// its record layer was (userspace or kernel TLS) according to the proxy itself and to /proc/net/tls_stat.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { NGINX_STREAM_MODULE, freePort, pinned, running, startChild, stopChild, versionOf, waitListening, type Child, type CpuPlan } from './tools.js';

export const SYSTEM_IDS = [
  'l4', 'nginx', 'nginx-ktls', 'node', 'sidecar', 'sidecar-w2', 'sidecar-tx', 'sidecar-txrx', 'sidecar-tcp', 'sidecar-tcp-tx', 'sidecar-tcp-txrx',
] as const;
export type SystemId = (typeof SYSTEM_IDS)[number];
export const HOST_DEFAULT: SystemId[] = ['nginx', 'node', 'sidecar'];
export const KERNEL_DEFAULT: SystemId[] = ['l4', 'nginx', 'nginx-ktls', 'node', 'sidecar', 'sidecar-tx', 'sidecar-txrx', 'sidecar-tcp', 'sidecar-tcp-txrx'];
/** The L4 floor speaks plain HTTP (no TLS at all); every other system is measured over TLS. */
export function schemeOf(id: SystemId): 'http' | 'https' {
  return id === 'l4' ? 'http' : 'https';
}
/** The one TLS 1.3 suite every peer is configured with (the kernel has it, AES-NI makes it cheap). */
export const SUITE = 'TLS_AES_128_GCM_SHA256';

export interface Context {
  root: string;
  dir: string;
  plan: CpuPlan;
  originPort: number;
  tls: { cert: string; key: string };
  sidecarCli: string;
  sidecarNodeArgs: string[];
  kernel: boolean;
  /** BENCH_CHILD_LOGS: where each sidecar process's whole output goes (`<system>-<pid>.log`), or null. */
  childLogDir: string | null;
}

export interface System {
  id: SystemId;
  description: string;
  available: boolean;
  /** Why not available (first line of what the process said), or ''. */
  reason: string;
  child: Child | null;
  port: number;
  adminPort: number;
  /** Negotiated protocol and suite, from the correctness check. */
  tls: string;
}

/**
 * The floor: nginx's stream module relaying TCP to the origin, no TLS and no HTTP. What moving the bytes through
 * one userspace relay costs; kTLS rows above it pay for the cipher (and the sidecar's for HTTP).
 */
function l4Conf(ctx: Context, port: number): string {
  const d = ctx.dir;
  const asRoot = process.getuid?.() === 0;
  return `# l4: nginx stream relay, plain TCP, one worker
load_module ${NGINX_STREAM_MODULE};
daemon off;
master_process on;
worker_processes 1;
${asRoot ? 'user www-data;\n' : ''}pid ${d}/l4.pid;
error_log stderr warn;
events { worker_connections 4096; }
stream {
  upstream origin { server 127.0.0.1:${ctx.originPort}; }
  server {
    listen 127.0.0.1:${port};
    proxy_pass origin;
    proxy_buffer_size 64k;
  }
}
`;
}

function nginxConf(id: SystemId, ctx: Context, port: number): string {
  const d = ctx.dir;
  const asRoot = process.getuid?.() === 0;
  return `# ${id}: nginx as a TLS 1.3 reverse proxy, one worker, no buffering, keep-alive to the origin
daemon off;
master_process on;
worker_processes 1;
${asRoot ? 'user www-data;\n' : ''}pid ${d}/${id}.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${d}/${id}-body;
  proxy_temp_path ${d}/${id}-proxy;
  fastcgi_temp_path ${d}/${id}-fastcgi;
  uwsgi_temp_path ${d}/${id}-uwsgi;
  scgi_temp_path ${d}/${id}-scgi;
  upstream origin {
    server 127.0.0.1:${ctx.originPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${ctx.tls.cert};
    ssl_certificate_key ${ctx.tls.key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites ${SUITE};
${id === 'nginx-ktls' ? '    ssl_conf_command Options KTLS;\n' : ''}    keepalive_requests 1000000;
    keepalive_timeout 60s;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_buffering off;
      # One read from the origin fills one full TLS record (16 KiB): the default (one 4 KiB page) makes nginx
      # read and encrypt in quarter records and costs it about twice the CPU per GiB.
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
    }
  }
}
`;
}

function sidecarConfig(id: SystemId, ctx: Context, port: number, adminPort: number): string {
  const direction = id.endsWith('-txrx') ? 'txrx' : 'tx';
  const ktlsOn = id.endsWith('-tx') || id.endsWith('-txrx');
  const tcp = id.startsWith('sidecar-tcp');
  return [
    'listen:', '  host: 127.0.0.1', `  port: ${port}`,
    'admin:', '  host: 127.0.0.1', `  port: ${adminPort}`,
    `mode: ${tcp ? 'tcp' : 'http'}`,
    'upstream:', tcp ? `  address: 127.0.0.1:${ctx.originPort}` : `  url: http://127.0.0.1:${ctx.originPort}`,
    'tls:', `  cert: ${ctx.tls.cert}`, `  key: ${ctx.tls.key}`, '  minVersion: TLSv1.3', `  ciphersuites: ${SUITE}`,
    'log:', '  level: warn',
    'ktls:', `  enabled: ${ktlsOn}`, `  direction: ${direction}`, '  sampleRate: 1',
    ...(id === 'sidecar-w2' ? ['workers: 2'] : []),
    '',
  ].join('\n');
}

export function describe(id: SystemId, ctx: Context): string {
  switch (id) {
    case 'nginx': return `${versionOf(['nginx', '-v'])}, 1 worker, proxy_buffering off, proxy_buffer_size 16k, upstream keepalive 64, access_log off`;
    case 'nginx-ktls': return `the nginx peer plus ssl_conf_command Options KTLS`;
    case 'node': return `node ${process.version} https.createServer + http-proxy-3 web(), keep-alive http.Agent (bench/peers/plain-node.mjs)`;
    case 'sidecar': return `${path.relative(ctx.root, ctx.sidecarCli) || ctx.sidecarCli}, 1 worker, log warn, ktls.enabled false`;
    case 'sidecar-w2': return 'the sidecar with workers: 2';
    case 'sidecar-tx': return 'the sidecar with ktls.enabled true, direction tx';
    case 'sidecar-txrx': return 'the sidecar with ktls.enabled true, direction txrx';
    case 'sidecar-tcp': return 'the sidecar in tcp mode (TLS terminated, bytes relayed to the origin, no HTTP layer), ktls.enabled false';
    case 'sidecar-tcp-tx': return 'the sidecar in tcp mode, ktls.enabled true, direction tx (ktls.splice default: true)';
    case 'sidecar-tcp-txrx': return 'the sidecar in tcp mode, ktls.enabled true, direction txrx (ktls.splice default: true)';
    case 'l4': return `the floor: ${versionOf(['nginx', '-v'])} stream module, a plain TCP relay (no TLS, no HTTP), 1 worker`;
  }
}

function firstLine(s: string): string {
  return s.split('\n').map((l) => l.trim()).find(Boolean) ?? '';
}

async function waitReady(sys: System, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!running(sys.child!)) throw new Error(`exited: ${firstLine(sys.child!.err()) || firstLine(sys.child!.out()) || `code ${sys.child!.proc.exitCode}`}`);
    try {
      if (sys.adminPort) {
        const status = await new Promise<number>((resolve, reject) => {
          http.get({ host: '127.0.0.1', port: sys.adminPort, path: '/readyz' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
        });
        if (status === 200) return;
      } else {
        await fetchOnce(sys.port, '/1k', schemeOf(sys.id));
        return;
      }
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not ready within ${ms / 1000} s`);
}

/**
 * The node flags a CLI's own shebang gives it (`#!/usr/bin/env -S node --flag …`):
 * the sidecar is measured as its bin and image start it, and a baseline build
 * gets whatever its own first line said.
 */
export function shebangFlags(cli: string): string[] {
  const first = readFileSync(cli, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\/usr\/bin\/env -S node((?: --[^\s]+)*)\s*$/.exec(first);
  return m?.[1] ? m[1].trim().split(/\s+/) : [];
}

export async function startSystem(id: SystemId, ctx: Context): Promise<System> {
  const port = await freePort();
  const sys: System = { id, description: describe(id, ctx), available: false, reason: '', child: null, port, adminPort: 0, tls: '' };
  if (id === 'nginx' || id === 'nginx-ktls' || id === 'l4') {
    const conf = path.join(ctx.dir, `${id}.conf`);
    writeFileSync(conf, id === 'l4' ? l4Conf(ctx, port) : nginxConf(id, ctx, port));
    sys.child = startChild(pinned(ctx.plan.proxy, ['nginx', '-p', ctx.dir, '-c', conf, '-e', 'stderr']));
  } else if (id === 'node') {
    sys.child = startChild(pinned(ctx.plan.proxy, [process.execPath, path.join(ctx.root, 'bench/peers/plain-node.mjs'), String(port), `http://127.0.0.1:${ctx.originPort}`, ctx.tls.cert, ctx.tls.key]));
    await waitListening(sys.child, id, 30_000);
  } else {
    sys.adminPort = await freePort();
    const conf = path.join(ctx.dir, `${id}.yaml`);
    writeFileSync(conf, sidecarConfig(id, ctx, port, sys.adminPort));
    const log = ctx.childLogDir ? { dir: ctx.childLogDir, name: id } : undefined;
    sys.child = startChild(pinned(ctx.plan.proxy, [process.execPath, ...shebangFlags(ctx.sidecarCli), ...ctx.sidecarNodeArgs, ctx.sidecarCli, '--config', conf]), undefined, log);
  }
  try {
    // In the lab the first start probes the kernel while the crypto modules load under emulation (10-20 s).
    await waitReady(sys, ctx.kernel ? 180_000 : 30_000);
    sys.available = true;
  } catch (err) {
    sys.reason = (err as Error).message;
    await stopChild(sys.child, 2000);
  }
  return sys;
}

export async function stopSystem(sys: System, graceMs: number): Promise<void> {
  if (sys.child) await stopChild(sys.child, graceMs);
}

/** One GET over a fresh connection (TLS unless `scheme` is http): status, body bytes, negotiated protocol and suite. */
export function fetchOnce(port: number, urlPath: string, scheme: 'http' | 'https' = 'https'): Promise<{ status: number; bytes: number; tls: string }> {
  return new Promise((resolve, reject) => {
    const get = scheme === 'https' ? https.get : http.get;
    const req = get({ host: '127.0.0.1', port, path: urlPath, rejectUnauthorized: false, agent: false }, (res) => {
      const sock = res.socket as TLSSocket;
      const tls = scheme === 'https' ? `${sock.getProtocol()} ${sock.getCipher()?.standardName ?? '?'}` : 'no TLS';
      let bytes = 0;
      res.on('data', (d: Buffer) => { bytes += d.length; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, tls }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(120_000, () => req.destroy(new Error(`GET ${urlPath}: timeout`)));
  });
}

/** Fails loudly unless the system answers 200 with the right byte count on every path, over the one suite. */
export async function verify(sys: System, paths: { path: string; bytes: number }[]): Promise<void> {
  for (const p of paths) {
    const r = await fetchOnce(sys.port, p.path, schemeOf(sys.id));
    if (r.status !== 200 || r.bytes !== p.bytes) {
      throw new Error(`${sys.id}: GET ${p.path} gave status ${r.status} and ${r.bytes} bytes, expected 200 and ${p.bytes}`);
    }
    if (schemeOf(sys.id) === 'https' && (!r.tls.includes(SUITE) || !r.tls.startsWith('TLSv1.3'))) throw new Error(`${sys.id}: negotiated ${r.tls}, expected TLSv1.3 ${SUITE}`);
    sys.tls = r.tls;
  }
}

/** The nginx work directory must be reachable by its worker user (www-data when started as root). */
export function openDirForNginx(dir: string): void {
  chmodSync(dir, 0o755);
}

/** connections_opened_total from the sidecar's /metrics, by "ktls/reason/direction". */
export async function sidecarConnections(adminPort: number): Promise<Map<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve(body));
    }).on('error', reject);
  });
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('ktls_sidecar_connections_opened_total{')) continue;
    const label = (k: string): string => new RegExp(`${k}="([^"]*)"`).exec(line)?.[1] ?? '?';
    const key = `${label('ktls')}/${label('ktls_reason')}/${label('direction')}`;
    out.set(key, (out.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}
