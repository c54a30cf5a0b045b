// The upstream's side of PROXY protocol v2: parse the header the sidecar
// builds (proxy/fronts/proxy-protocol.ts) so tests can check what a TCP
// upstream would see. Production only builds headers, so the parser lives here.
import { PROXY_V2_SIGNATURE } from '../../proxy/fronts/proxy-protocol.js';

export interface ParsedProxyV2 {
  command: 'LOCAL' | 'PROXY';
  family: 'inet' | 'inet6' | 'unspec';
  sourceAddress: string;
  sourcePort: number;
  destAddress: string;
  destPort: number;
  tlvs: Map<number, Buffer>;
  /** Total header length: the application bytes start here. */
  length: number;
}

function ipv6String(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/** Parse a PROXY v2 header at the start of `buf`; null when more bytes are needed. Throws on a bad header. */
export function parseProxyV2Header(buf: Buffer): ParsedProxyV2 | null {
  if (buf.length < 16) return null;
  if (!buf.subarray(0, 12).equals(PROXY_V2_SIGNATURE)) throw new Error('not a PROXY v2 header');
  const verCmd = buf.readUInt8(12);
  if (verCmd >> 4 !== 2) throw new Error('PROXY header version is not 2');
  const fam = buf.readUInt8(13);
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return null;
  const body = buf.subarray(16, 16 + len);
  let family: ParsedProxyV2['family'] = 'unspec';
  let src = '';
  let dst = '';
  let sp = 0;
  let dp = 0;
  let off = 0;
  if (fam >> 4 === 1) {
    family = 'inet';
    src = [...body.subarray(0, 4)].join('.');
    dst = [...body.subarray(4, 8)].join('.');
    sp = body.readUInt16BE(8);
    dp = body.readUInt16BE(10);
    off = 12;
  } else if (fam >> 4 === 2) {
    family = 'inet6';
    src = ipv6String(body.subarray(0, 16));
    dst = ipv6String(body.subarray(16, 32));
    sp = body.readUInt16BE(32);
    dp = body.readUInt16BE(34);
    off = 36;
  }
  const tlvs = new Map<number, Buffer>();
  while (off + 3 <= body.length) {
    const type = body.readUInt8(off);
    const l = body.readUInt16BE(off + 1);
    tlvs.set(type, body.subarray(off + 3, off + 3 + l));
    off += 3 + l;
  }
  return {
    command: (verCmd & 0x0f) === 1 ? 'PROXY' : 'LOCAL',
    family,
    sourceAddress: src,
    sourcePort: sp,
    destAddress: dst,
    destPort: dp,
    tlvs,
    length: 16 + len,
  };
}
