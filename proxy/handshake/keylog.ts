// NSS key-log lines, as Node's `keylog` event delivers them:
//   <LABEL> <client_random hex> <secret hex>\n
// Parsed straight from the Buffer (no JS string ever holds a secret), and
// only the labels the engine needs are kept.

export const KEYLOG_LABELS = [
  'CLIENT_RANDOM', // TLS 1.2 master secret
  'CLIENT_HANDSHAKE_TRAFFIC_SECRET',
  'SERVER_HANDSHAKE_TRAFFIC_SECRET',
  'CLIENT_TRAFFIC_SECRET_0',
  'SERVER_TRAFFIC_SECRET_0',
] as const;
export type KeylogLabel = (typeof KEYLOG_LABELS)[number];

export interface KeylogEntry {
  label: KeylogLabel;
  clientRandom: Buffer;
  secret: Buffer;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

function decodeHex(line: Buffer, from: number, to: number): Buffer | null {
  if ((to - from) % 2 !== 0) return null;
  const out = Buffer.alloc((to - from) / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexValue(line[from + 2 * i] ?? 0);
    const lo = hexValue(line[from + 2 * i + 1] ?? 0);
    if (hi < 0 || lo < 0) { out.fill(0); return null; }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/**
 * Parse one key-log line. Returns null for labels the engine does not use
 * (e.g. EXPORTER_SECRET) and for malformed lines.
 */
export function parseKeylogLine(line: Buffer): KeylogEntry | null {
  let end = line.length;
  while (end > 0 && (line[end - 1] === 0x0a || line[end - 1] === 0x0d || line[end - 1] === 0x20)) end--;
  const s1 = line.indexOf(0x20);
  if (s1 <= 0 || s1 >= end) return null;
  const s2 = line.indexOf(0x20, s1 + 1);
  if (s2 < 0 || s2 >= end) return null;
  const label = line.toString('latin1', 0, s1);
  if (!(KEYLOG_LABELS as readonly string[]).includes(label)) return null;
  const clientRandom = decodeHex(line, s1 + 1, s2);
  if (!clientRandom || clientRandom.length !== 32) return null;
  const secret = decodeHex(line, s2 + 1, end);
  if (!secret || ![32, 48].includes(secret.length)) { secret?.fill(0); return null; }
  return { label: label as KeylogLabel, clientRandom, secret };
}
