// Parsing of the few handshake fields the engine reads from the wire:
// ClientHello random + SNI, ServerHello version/cipher/random/extensions
// (HelloRetryRequest recognised), ALPN from ServerHello (1.2) or
// EncryptedExtensions (1.3). Bounds-checked: malformed input throws TlsWireError.

import { TlsWireError } from '../tls/records.js';

const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_PRE_SHARED_KEY = 41;
const EXT_SUPPORTED_VERSIONS = 43;

/** RFC 8446 4.1.3: SHA-256("HelloRetryRequest"). */
export const HRR_RANDOM = Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex');

class Reader {
  constructor(private readonly b: Buffer, public o = 0, private readonly end = b.length) {}
  need(n: number): void {
    if (this.o + n > this.end) throw new TlsWireError('truncated handshake message');
  }
  u8(): number { this.need(1); return this.b[this.o++] ?? 0; }
  u16(): number { this.need(2); const v = this.b.readUInt16BE(this.o); this.o += 2; return v; }
  u24(): number { this.need(3); const v = this.b.readUIntBE(this.o, 3); this.o += 3; return v; }
  bytes(n: number): Buffer { this.need(n); const v = this.b.subarray(this.o, this.o + n); this.o += n; return v; }
  get left(): number { return this.end - this.o; }
}

interface Extension { type: number; data: Buffer }

function readExtensions(r: Reader): Extension[] {
  if (r.left === 0) return [];
  const block = new Reader(r.bytes(r.u16()));
  const out: Extension[] = [];
  while (block.left > 0) {
    const type = block.u16();
    out.push({ type, data: block.bytes(block.u16()) });
  }
  return out;
}

export interface ServerHello {
  /** The negotiated version: supported_versions if present, else legacy_version. */
  version: number;
  cipherSuite: number;
  random: Buffer;
  helloRetryRequest: boolean;
  /** TLS 1.3: pre_shared_key extension present (PSK resumption). */
  pskAccepted: boolean;
  /** TLS 1.2: ALPN in the ServerHello (TLS 1.3 puts it in EncryptedExtensions). */
  alpn: string | null;
}

export function parseServerHello(body: Buffer): ServerHello {
  const r = new Reader(body);
  const legacyVersion = r.u16();
  const random = Buffer.from(r.bytes(32));
  r.bytes(r.u8()); // legacy_session_id_echo
  const cipherSuite = r.u16();
  r.u8(); // compression
  const exts = readExtensions(r);
  let version = legacyVersion;
  let alpn: string | null = null;
  for (const e of exts) {
    if (e.type === EXT_SUPPORTED_VERSIONS && e.data.length === 2) version = e.data.readUInt16BE(0);
    if (e.type === EXT_ALPN) alpn = parseAlpnSelection(e.data);
  }
  return {
    version,
    cipherSuite,
    random,
    helloRetryRequest: random.equals(HRR_RANDOM),
    pskAccepted: exts.some((e) => e.type === EXT_PRE_SHARED_KEY),
    alpn,
  };
}

/** ALPN from a TLS 1.3 EncryptedExtensions body, or null. */
export function alpnFromEncryptedExtensions(body: Buffer): string | null {
  const r = new Reader(body);
  for (const e of readExtensions(r)) if (e.type === EXT_ALPN) return parseAlpnSelection(e.data);
  return null;
}

function parseAlpnSelection(data: Buffer): string {
  const r = new Reader(data);
  const list = new Reader(r.bytes(r.u16()));
  return list.bytes(list.u8()).toString('latin1');
}

/**
 * SNI from a ClientHello body. The random (clientRandomOf) is required, a
 * truncated tail yields null: the engine needs the random early, to route
 * key-log lines.
 */
export function clientHelloServername(body: Buffer): string | null {
  const r = new Reader(body);
  r.bytes(2 + 32); // legacy_version, random
  r.bytes(r.u8()); // legacy_session_id
  let servername: string | null = null;
  try {
    r.bytes(r.u16()); // cipher_suites
    r.bytes(r.u8()); // compression
    for (const e of readExtensions(r)) {
      if (e.type !== EXT_SERVER_NAME) continue;
      const list = new Reader(e.data);
      const names = new Reader(list.bytes(list.u16()));
      while (names.left > 0) {
        const type = names.u8();
        const name = names.bytes(names.u16());
        if (type === 0) servername = name.toString('latin1');
      }
    }
  } catch {
    servername = null;
  }
  return servername;
}

/** The 32-byte client random at its fixed offset, or null when not yet available. */
export function clientRandomOf(partialBody: Buffer): Buffer | null {
  return partialBody.length >= 34 ? Buffer.from(partialBody.subarray(2, 34)) : null;
}
