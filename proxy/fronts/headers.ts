// Request/response header rules of the HTTP fronts, as pure functions:
// hop-by-hop removal (RFC 9110 §7.6.1), X-Forwarded-*, and the client
// certificate header (Envoy's x-forwarded-client-cert format).
import type { IncomingHttpHeaders } from 'node:http';
import type { ConnectionFacts } from '../connection/facts.js';
import type { PeerCertificateSummary } from '../handshake/facts.js';

/** Always connection-specific, whether or not Connection lists them. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection'];

/**
 * Headers a Connection token may never remove. Content-Length (and the
 * framing transfer-encoding stands for) delimits the message: dropping it
 * sends a body upstream unframed, where it parses as a second, unstamped
 * request (smuggling). Host routes the request. The forwarding headers are
 * this hop's to set or strip, not the client's to delete. Transfer-Encoding
 * is listed too although HOP_BY_HOP removes it: the forwarder re-frames it.
 */
const NEVER_NOMINATED = new Set(['content-length', 'transfer-encoding', 'host', 'forwarded']);

function nominatable(name: string): boolean {
  // Pseudo-headers (HTTP/2) and every x-forwarded-* (XFF/proto/host/port and
  // the default client-cert header). A custom client-cert header needs no
  // entry: setForwardingHeaders removes and re-sets it after the strip.
  return !NEVER_NOMINATED.has(name) && !name.startsWith(':') && !name.startsWith('x-forwarded-');
}

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
 * Connection header names, except those in NEVER_NOMINATED (a client must not
 * be able to strip framing or our forwarding headers that way). `keepUpgrade`
 * keeps Connection/Upgrade for a WebSocket handshake, which must reach the
 * upstream.
 */
export function stripHopByHop(headers: Headers, keepUpgrade = false): void {
  const named = tokens(headers.connection).filter(nominatable);
  for (const h of [...HOP_BY_HOP, ...named]) {
    if (keepUpgrade && (h === 'connection' || h === 'upgrade')) continue;
    delete headers[h];
  }
  if (keepUpgrade) headers.connection = 'upgrade';
}

/** How many times `name` (lower case) occurs in node's rawHeaders list ([name, value, name, value, ...]). */
export function countHeader(rawHeaders: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) n++;
  return n;
}

/** The first value of `name` (lower case) in a rawHeaders list. */
function firstValue(rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) return rawHeaders[i + 1];
  return undefined;
}

/**
 * Why a request must be refused (400) before forwarding, or undefined; takes
 * node's rawHeaders, which keep every field as received (the headers object
 * keeps the first Host and drops the rest silently).
 *  - duplicate_host: two Host fields (RFC 9112 §3.2 says 400); the sidecar
 *    and a later hop could route by different names.
 *  - authority_mismatch (HTTP/2): Host names another authority than
 *    :authority (RFC 9113 §8.3.1: malformed).
 */
export function requestProblem(rawHeaders: readonly string[]): 'duplicate_host' | 'authority_mismatch' | undefined {
  if (countHeader(rawHeaders, 'host') > 1) return 'duplicate_host';
  const authority = firstValue(rawHeaders, ':authority');
  const host = firstValue(rawHeaders, 'host');
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) return 'authority_mismatch';
  return undefined;
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** Envoy-style XFCC element: `By=<us>;Hash=<sha256>;Subject="<dn>";URI=<uri>;DNS=<name>`. */
export function formatXfcc(by: string, client: PeerCertificateSummary): string {
  const parts: string[] = [];
  if (by) parts.push(`By=${by}`);
  parts.push(`Hash=${client.sha256}`);
  parts.push(`Subject=${quote(client.subject)}`);
  for (const uri of client.uris) parts.push(`URI=${uri}`);
  for (const dns of client.dns) parts.push(`DNS=${dns}`);
  return parts.join(';');
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** An RFC 7239 forwarded-pair value: a token as is, anything else (IPv6, host:port) quoted. */
function forwardedValue(v: string): string {
  return TOKEN.test(v) ? v : quote(v);
}

/** Our RFC 7239 element: `for=<client>;host=<host>;proto=https` (IPv6 as `for="[addr]"`). */
export function formatForwarded(client: string, host: string): string {
  const parts = [`for=${forwardedValue(client.includes(':') ? `[${client}]` : client)}`];
  if (host) parts.push(`host=${forwardedValue(host)}`);
  parts.push('proto=https');
  return parts.join(';');
}

/**
 * The forwarding headers the upstream sees. XFF is appended to (an upstream
 * chain may trust earlier hops); proto/host/port are overwritten because only
 * this hop knows them. `Forwarded` (RFC 7239) is replaced by one element of
 * ours, never passed on: upstreams that prefer it over X-Forwarded-* would
 * otherwise trust whatever the client wrote. The client-cert header is
 * removed whatever the client sent and set only from a verified certificate.
 */
export function setForwardingHeaders(headers: Headers, facts: ConnectionFacts, clientCertHeader: string): void {
  const prior = headers['x-forwarded-for'];
  const priorList = Array.isArray(prior) ? prior.join(', ') : typeof prior === 'string' ? prior : '';
  const client = facts.remoteAddress.startsWith('::ffff:') ? facts.remoteAddress.slice(7) : facts.remoteAddress;
  headers['x-forwarded-for'] = priorList ? `${priorList}, ${client}` : client;
  headers['x-forwarded-proto'] = 'https';
  const authority = headers[':authority'] ?? headers.host;
  const host = typeof authority === 'string' ? authority : '';
  headers['x-forwarded-host'] = host;
  headers.forwarded = formatForwarded(client, host);
  headers['x-forwarded-port'] = String(facts.localPort);
  const certHeader = clientCertHeader.toLowerCase();
  delete headers[certHeader];
  if (facts.client) headers[certHeader] = formatXfcc(facts.localCertBy, facts.client);
}
