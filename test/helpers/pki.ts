// Test PKI made with the openssl CLI: a CA, server certificates (localhost,
// alt.example, a second localhost cert for reload tests), client certificates
// from the CA and from an unrelated CA. Everything lives in a temp directory.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Pki {
  dir: string;
  caCert: string;
  server: { cert: string; key: string };
  server2: { cert: string; key: string };
  alt: { cert: string; key: string };
  client: { cert: string; key: string };
  rogueClient: { cert: string; key: string };
  cleanup(): void;
}

function ossl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

function issue(dir: string, name: string, subj: string, san: string, ca: { cert: string; key: string }, ext: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.pem`);
  const extFile = path.join(dir, `${name}.ext`);
  fs.writeFileSync(extFile, `${ext}\n${san ? `subjectAltName=${san}\n` : ''}`);
  ossl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', subj], dir);
  ossl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', cert, '-extfile', extFile], dir);
  return { cert, key };
}

function makeCa(dir: string, name: string, subj: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.pem`);
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-subj', subj, '-days', '2'], dir);
  return { cert, key };
}

export function makePki(): Pki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-pki-'));
  const ca = makeCa(dir, 'ca', '/CN=Test CA');
  const rogueCa = makeCa(dir, 'rogue-ca', '/CN=Rogue CA');
  const serverExt = 'extendedKeyUsage=serverAuth';
  const clientExt = 'extendedKeyUsage=clientAuth';
  return {
    dir,
    caCert: ca.cert,
    server: issue(dir, 'server', '/CN=localhost', 'DNS:localhost,IP:127.0.0.1,URI:spiffe://test/sidecar', ca, serverExt),
    server2: issue(dir, 'server2', '/CN=localhost-v2', 'DNS:localhost,IP:127.0.0.1', ca, serverExt),
    alt: issue(dir, 'alt', '/CN=alt.example', 'DNS:alt.example,DNS:*.wild.example', ca, serverExt),
    client: issue(dir, 'client', '/O=Tests/CN=client one', 'URI:spiffe://test/client', ca, clientExt),
    rogueClient: issue(dir, 'rogue', '/CN=rogue client', '', rogueCa, clientExt),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** One self-signed P-256 certificate for localhost, read into memory (for a bare tls.createServer). */
export function selfSignedCert(): { key: Buffer; cert: Buffer } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktls-sidecar-cert-'));
  try {
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', 'k.pem', '-out', 'c.pem'], dir);
    return { key: fs.readFileSync(path.join(dir, 'k.pem')), cert: fs.readFileSync(path.join(dir, 'c.pem')) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
