// SecureContexts for the listener: one default certificate plus SNI
// certificates (exact names and `*.example.com` wildcards). A TlsContexts value
// is immutable; reload builds a new one and the handshake step swaps it in, so
// a bad new certificate never replaces a good one.
import crypto from 'node:crypto';
import tls from 'node:tls';
import type { TlsVersion } from '../../native/crypto-info.js';
import { ConfigError } from '../errors.js';
import { type CertPair, type CertSummary, readCertPair, readConfiguredFile, summarizeCert, type WarnLog, warnIfKeyExposed } from './certs.js';

export interface SniEntry {
  servername: string;
  cert: string;
  key: string;
}

/** The tls.* config keys this module needs (paths are files; '' means unset). */
export interface TlsSettings {
  cert: string;
  key: string;
  sni: SniEntry[];
  minVersion: TlsVersion;
  /** OpenSSL cipher list for TLS 1.2 ('' = Node's default). */
  ciphers: string;
  /** TLS 1.3 suites, colon separated ('' = Node's default). */
  ciphersuites: string;
  /** PEM file with the CAs client certificates must chain to; setting it turns mTLS on ('' = off). */
  clientCA: string;
  /** With clientCA: true = a valid client certificate is required; false = optional (a presented one must still verify). */
  requestCert: boolean;
  sessionTickets: boolean;
}

interface Entry {
  context: tls.SecureContext;
  summary: CertSummary;
}

export class TlsContexts {
  private constructor(
    readonly defaultEntry: Entry,
    private readonly exact: Map<string, Entry>,
    private readonly wildcard: Map<string, Entry>,
    /** Every file the contexts were built from (what hot reload watches). */
    readonly files: string[],
  ) {}

  /** The context (and served certificate) for a client's SNI. */
  lookup(servername: string): Entry {
    const name = servername.toLowerCase();
    const hit = this.exact.get(name);
    if (hit) return hit;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wild = this.wildcard.get(name.slice(dot + 1));
      if (wild) return wild;
    }
    return this.defaultEntry;
  }

  /** Options for the tls.Server that runs handshakes with these contexts. */
  static serverOptions(settings: TlsSettings, alpn: string[], handshakeTimeoutMs: number): tls.TlsOptions {
    return {
      ALPNProtocols: alpn.length > 0 ? alpn : undefined,
      requestCert: settings.clientCA !== '',
      // The handshake step checks `authorized` itself (required or optional
      // mode) so it can count why a client was refused.
      rejectUnauthorized: false,
      handshakeTimeout: handshakeTimeoutMs,
      allowHalfOpen: true,
    };
  }

  /**
   * Read every file and build the contexts. Throws ConfigError (naming the
   * key) on an unreadable file, an unparsable certificate or a key that does
   * not match its certificate. `options.warn` hears about key files other
   * users can read (once per path and mode, so reloads do not repeat it).
   */
  static load(settings: TlsSettings, demoPair?: CertPair, options: { warn?: WarnLog } = {}): TlsContexts {
    const files: string[] = [];
    let clientCA: Buffer | undefined;
    if (settings.clientCA) {
      clientCA = readConfiguredFile('tls.clientCA', settings.clientCA);
      files.push(settings.clientCA);
    }
    let defaultPair: CertPair;
    // config/checks.ts guarantees tls.cert and tls.key come together, and non-empty SNI names.
    if (settings.cert) {
      const read = readCertPair(settings.cert, settings.key, 'tls');
      warnIfKeyExposed(read.keyFile, options.warn);
      defaultPair = read;
      files.push(settings.cert, settings.key);
    } else if (demoPair) {
      defaultPair = { cert: Buffer.from(demoPair.cert), key: Buffer.from(demoPair.key) };
    } else {
      throw new ConfigError('tls.cert', 'no certificate configured (set tls.cert and tls.key, or use --demo)');
    }
    const defaultEntry = buildEntry(settings, defaultPair, clientCA, 'tls');
    const exact = new Map<string, Entry>();
    const wildcard = new Map<string, Entry>();
    settings.sni.forEach((sni, i) => {
      const keyName = `tls.sni[${i}]`;
      const pair = readCertPair(sni.cert, sni.key, keyName);
      warnIfKeyExposed(pair.keyFile, options.warn);
      files.push(sni.cert, sni.key);
      const entry = buildEntry(settings, pair, clientCA, keyName);
      const name = sni.servername.toLowerCase();
      if (name.startsWith('*.')) wildcard.set(name.slice(2), entry);
      else exact.set(name, entry);
    });
    return new TlsContexts(defaultEntry, exact, wildcard, files);
  }
}

function cipherString(settings: TlsSettings): string {
  const defaults = tls.DEFAULT_CIPHERS.split(':');
  // Node takes both lists in one `ciphers` string and splits on the TLS_ prefix.
  const v12 = settings.ciphers || defaults.filter((c) => !c.startsWith('TLS_')).join(':');
  const v13 = settings.ciphersuites || defaults.filter((c) => c.startsWith('TLS_')).join(':');
  return `${v13}:${v12}`;
}

/**
 * OpenSSL options for every context. Client-initiated TLS 1.2 renegotiation is
 * refused (a no_renegotiation warning alert; OpenSSL clients then give up the
 * connection): Node's server would accept 3 per connection, it costs a full
 * handshake each, and a kTLS socket could not follow one anyway.
 */
function secureOptions(settings: TlsSettings): number {
  const { SSL_OP_NO_RENEGOTIATION, SSL_OP_NO_TICKET } = crypto.constants;
  return SSL_OP_NO_RENEGOTIATION | (settings.sessionTickets ? 0 : SSL_OP_NO_TICKET);
}

function buildEntry(settings: TlsSettings, pair: CertPair, clientCA: Buffer | undefined, keyName: string): Entry {
  let summary: CertSummary;
  try {
    summary = summarizeCert(pair.cert);
  } catch {
    throw new ConfigError(`${keyName}.cert`, 'not a PEM certificate');
  }
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({
      cert: pair.cert,
      key: pair.key,
      ca: clientCA,
      minVersion: settings.minVersion,
      maxVersion: 'TLSv1.3',
      ciphers: cipherString(settings),
      // A fixed id context keeps session resumption working with client certs
      // (OpenSSL refuses to resume a verified session without one).
      sessionIdContext: 'ktls-sidecar',
      // Our cipher order, not the client's: the operator's tls.ciphers/ciphersuites
      // rank what kTLS handles best (AES-GCM) first.
      honorCipherOrder: true,
      secureOptions: secureOptions(settings),
    });
  } catch (err) {
    // OpenSSL's messages name no key material ("key values mismatch", "no cipher match").
    const message = (err as Error).message;
    if (/cipher/i.test(message)) {
      throw new ConfigError(settings.ciphersuites && !settings.ciphers ? 'tls.ciphersuites' : 'tls.ciphers', message);
    }
    throw new ConfigError(`${keyName}.key`, `unusable certificate/key: ${message}`);
  } finally {
    pair.key.fill(0);
  }
  return { context, summary };
}
