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

/** The last element made: a connection's requests repeat client and host. */
let lastForwarded = { client: '', host: '', value: '' };

/** Our RFC 7239 element: `for=<client>;host=<host>;proto=https` (IPv6 as `for="[addr]"`). */
export function formatForwarded(client: string, host: string): string {
  if (client === lastForwarded.client && host === lastForwarded.host && lastForwarded.value) return lastForwarded.value;
  const value = makeForwarded(client, host);
  lastForwarded = { client, host, value };
  return value;
}

function makeForwarded(client: string, host: string): string {
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

/** Request fields this hop frames or sets itself: never copied from the client. */
const SET_BY_US = new Set(['content-length', 'transfer-encoding', 'host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded']);
const ALWAYS_HOP = new Set(HOP_BY_HOP);

/** The request as the upstream head needs it (node:http and node:http2 compat requests alike). */
interface RequestFields {
  rawHeaders: readonly string[];
  headers: Headers;
}

/**
 * The fields of the upstream request, one `name: value\r\n` line each, in
 * one string: the client's end-to-end fields as received (case and order
 * kept; pseudo-headers, hop-by-hop fields and those Connection names left
 * out; Cookie fields as one), then Host (the client's, or :authority, or `defaultHost`), then
 * `framing` (the body's Content-Length or Transfer-Encoding line, decided by
 * the caller, never copied), then the forwarding fields of setForwardingHeaders.
 */
export function upstreamRequestFields(req: RequestFields, facts: ConnectionFacts, clientCertHeader: string, framing: string, defaultHost: string): string {
  const h = req.headers;
  const named = h.connection === undefined ? undefined : new Set(tokens(h.connection).filter(nominatable));
  const certHeader = clientCertHeader.toLowerCase();
  const raw = req.rawHeaders;
  let out = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const lower = name.toLowerCase();
    if (ALWAYS_HOP.has(lower) || SET_BY_US.has(lower) || lower === certHeader || named?.has(lower)) continue;
    if (lower === 'cookie') continue;
    out += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  // One Cookie line (RFC 9113 §8.2.3: HTTP/2 splits it into fields that are
  // joined with "; " for HTTP/1.1; node joins them so in both APIs).
  if (h.cookie !== undefined) out += `Cookie: ${String(h.cookie)}\r\n`;
  const authority = h[':authority'] ?? h.host;
  out += `Host: ${typeof authority === 'string' && authority ? authority : defaultHost}\r\n`;
  out += framing;
  const fwd: Record<string, string | string[] | number | undefined> = { 'x-forwarded-for': h['x-forwarded-for'], ':authority': h[':authority'], host: h.host };
  setForwardingHeaders(fwd, facts, clientCertHeader);
  for (const name in fwd) {
    const v = fwd[name];
    if (name === ':authority' || name === 'host' || v === undefined) continue;
    out += `${name}: ${String(v)}\r\n`;
  }
  return out;
}
