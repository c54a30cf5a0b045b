// PROXY protocol v2 header (haproxy.org/download/2.9/doc/proxy-protocol.txt)
// so a TCP upstream sees the real client address, and optionally the ALPN and
// SNI the client negotiated. Pure: builds bytes (the upstream's parser used by
// the tests is test/helpers/proxy-v2.ts).
import net from 'node:net';

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** TLV types we emit (spec §2.2). */
export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
const PP2_CLIENT_SSL = 0x01;

export interface ProxyV2Info {
  sourceAddress: string;
  sourcePort: number;
  destAddress: string;
  destPort: number;
  /** Negotiated ALPN ('' = none → no TLV). */
  alpn?: string;
  /** SNI ('' = none → no TLV). */
  servername?: string;
  /** TLS version/cipher for the PP2_TYPE_SSL TLV (omitted when absent). */
  tlsVersion?: string;
  cipher?: string;
}

function unmap(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

function ipv6Bytes(addr: string): Buffer {
  // Expand '::' and embedded IPv4, then write 8 groups.
  let a = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4?.[1]) {
    const o = v4[1].split('.').map(Number);
    a = a.slice(0, -v4[1].length) + `${(((o[0] ?? 0) << 8) | (o[1] ?? 0)).toString(16)}:${(((o[2] ?? 0) << 8) | (o[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head.writeUInt8(type, 0);
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

/** Build a PROXY v2 PROXY-command header for a TCP connection. */
export function buildProxyV2Header(info: ProxyV2Info): Buffer {
  let src = unmap(info.sourceAddress);
  let dst = unmap(info.destAddress);
  let family: number;
  let addrs: Buffer;
  if (net.isIPv4(src) && net.isIPv4(dst)) {
    family = 0x11; // AF_INET, STREAM
    addrs = Buffer.alloc(12);
    Buffer.from(src.split('.').map(Number)).copy(addrs, 0);
    Buffer.from(dst.split('.').map(Number)).copy(addrs, 4);
    addrs.writeUInt16BE(info.sourcePort, 8);
    addrs.writeUInt16BE(info.destPort, 10);
  } else {
    // Mixed families: express both as IPv6 (IPv4-mapped where needed).
    if (net.isIPv4(src)) src = `::ffff:${src}`;
    if (net.isIPv4(dst)) dst = `::ffff:${dst}`;
    family = 0x21; // AF_INET6, STREAM
    addrs = Buffer.alloc(36);
    ipv6Bytes(src).copy(addrs, 0);
    ipv6Bytes(dst).copy(addrs, 16);
    addrs.writeUInt16BE(info.sourcePort, 32);
    addrs.writeUInt16BE(info.destPort, 34);
  }
  const tlvs: Buffer[] = [];
  if (info.alpn) tlvs.push(tlv(PP2_TYPE_ALPN, Buffer.from(info.alpn, 'latin1')));
  if (info.servername) tlvs.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(info.servername, 'utf8')));
  if (info.tlsVersion) {
    const head = Buffer.alloc(5);
    head.writeUInt8(PP2_CLIENT_SSL, 0);
    head.writeUInt32BE(0, 1); // verify: 0 = client cert verified or none requested
    const subs = [tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(info.tlsVersion, 'latin1'))];
    if (info.cipher) subs.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(info.cipher, 'latin1')));
    tlvs.push(tlv(PP2_TYPE_SSL, Buffer.concat([head, ...subs])));
  }
  const body = Buffer.concat([addrs, ...tlvs]);
  const fixed = Buffer.alloc(4);
  fixed.writeUInt8(0x21, 0); // version 2, command PROXY
  fixed.writeUInt8(family, 1);
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, fixed, body]);
}
