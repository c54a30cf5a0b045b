// HTTPS client helpers for tests (node:https, the self-made test CA or -k).
import https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import fs from 'node:fs';
import tls from 'node:tls';
import { Readable } from 'node:stream';

export interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface RequestOptions {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  servername?: string;
  ca?: string;
  cert?: string;
  key?: string;
  agent?: https.Agent | false;
}

export function request(port: number, o: RequestOptions = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method: o.method ?? 'GET',
        path: o.path ?? '/',
        headers: o.headers,
        servername: o.servername ?? 'localhost',
        ca: o.ca ? fs.readFileSync(o.ca) : undefined,
        rejectUnauthorized: o.ca !== undefined,
        cert: o.cert ? fs.readFileSync(o.cert) : undefined,
        key: o.key ? fs.readFileSync(o.key) : undefined,
        agent: o.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (o.body instanceof Readable) o.body.pipe(req);
    else req.end(o.body);
  });
}

/** Handshake only; resolves with the peer certificate subject CN and protocol. */
export function handshake(port: number, opts: tls.ConnectionOptions = {}): Promise<{ cn: string; protocol: string | null; fingerprint: string; alpn: string | false }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'localhost', ...opts }, () => {
      const cert = s.getPeerCertificate();
      const out = { cn: String(cert.subject?.CN ?? ''), protocol: s.getProtocol(), fingerprint: cert.fingerprint256, alpn: s.alpnProtocol ?? false };
      s.end();
      resolve(out);
    });
    s.on('error', reject);
  });
}
