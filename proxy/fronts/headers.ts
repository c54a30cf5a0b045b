// Request/response header rules of the HTTP fronts, as pure functions:
// hop-by-hop removal (RFC 9110 §7.6.1), X-Forwarded-*, and the client
// certificate header (Envoy's x-forwarded-client-cert format).
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientIdentity, HandshakeFacts } from '../pipeline/facts.js';

/** Always connection-specific, whether or not Connection lists them. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection'];

type Headers = IncomingHttpHeaders | Record<string, string | string[] | number | undefined>;

function tokens(value: unknown): string[] {
  const list = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : '';
  return list
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
}

/**
 * Remove hop-by-hop headers in place: the fixed set plus every header the
 * Connection header names. `keepUpgrade` keeps Connection/Upgrade for a
 * WebSocket handshake, which must reach the upstream.
 */
export function stripHopByHop(headers: Headers, keepUpgrade = false): void {
  const named = tokens(headers.connection);
  for (const h of [...HOP_BY_HOP, ...named]) {
    if (keepUpgrade && (h === 'connection' || h === 'upgrade')) continue;
    delete headers[h];
  }
  if (keepUpgrade) headers.connection = 'upgrade';
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** Envoy-style XFCC element: `By=<us>;Hash=<sha256>;Subject="<dn>";URI=<uri>;DNS=<name>`. */
export function formatXfcc(by: string, client: ClientIdentity): string {
  const parts: string[] = [];
  if (by) parts.push(`By=${by}`);
  parts.push(`Hash=${client.hash}`);
  parts.push(`Subject=${quote(client.subject)}`);
  for (const uri of client.uris) parts.push(`URI=${uri}`);
  for (const dns of client.dns) parts.push(`DNS=${dns}`);
  return parts.join(';');
}

/**
 * The forwarding headers the upstream sees. XFF is appended to (an upstream
 * chain may trust earlier hops); proto/host/port are overwritten because only
 * this hop knows them. The client-cert header is removed whatever the client
 * sent and set only from a verified certificate.
 */
export function setForwardingHeaders(headers: Headers, facts: HandshakeFacts, clientCertHeader: string): void {
  const prior = headers['x-forwarded-for'];
  const priorList = Array.isArray(prior) ? prior.join(', ') : typeof prior === 'string' ? prior : '';
  const client = facts.remoteAddress.startsWith('::ffff:') ? facts.remoteAddress.slice(7) : facts.remoteAddress;
  headers['x-forwarded-for'] = priorList ? `${priorList}, ${client}` : client;
  headers['x-forwarded-proto'] = 'https';
  const authority = headers[':authority'] ?? headers.host;
  headers['x-forwarded-host'] = typeof authority === 'string' ? authority : '';
  headers['x-forwarded-port'] = String(facts.localPort);
  const certHeader = clientCertHeader.toLowerCase();
  delete headers[certHeader];
  if (facts.client) headers[certHeader] = formatXfcc(facts.localCertBy, facts.client);
}
