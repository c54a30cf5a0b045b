// What the pipeline learned about one connection, handed to the record-layer
// step and to the fronts. Fronts read TLS facts from here and never from the
// stream: with kTLS the plaintext stream is not a TLSSocket.

/** The verified client certificate of an mTLS connection (absent without mTLS). */
export interface ClientIdentity {
  /** Subject DN, RFC 2253-ish `CN=a,O=b` order as OpenSSL prints it. */
  subject: string;
  /** SHA-256 of the DER certificate, lowercase hex (XFCC `Hash=`). */
  hash: string;
  /** URI SANs (XFCC `URI=`), usually SPIFFE IDs. */
  uris: string[];
  /** DNS SANs (XFCC `DNS=`). */
  dns: string[];
}

export interface HandshakeFacts {
  /** Pipeline-wide connection id, also in the connection's log line. */
  id: number;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** SNI the client sent, or '' when it sent none. */
  servername: string;
  /** Negotiated ALPN protocol, or '' when none was negotiated. */
  alpn: string;
  /** `TLSv1.2` / `TLSv1.3`. */
  tlsVersion: string;
  /** IANA cipher suite name (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`). */
  cipher: string;
  /** OpenSSL's name for the same suite (`ECDHE-RSA-AES128-GCM-SHA256`). */
  cipherOpenssl: string;
  /** SHA-256 hex of our own certificate that was served (XFCC `By=` is derived from it). */
  localCertHash: string;
  /** Subject of our served certificate, for XFCC `By=` when it has no URI SAN. */
  localCertBy: string;
  /** Present only when the client presented a certificate that verified. */
  client?: ClientIdentity;
  /** Whether the session was resumed (tickets / session ids). */
  resumed: boolean;
  /** monotonic ms (performance.now()) when the TCP connection was accepted. */
  acceptedAt: number;
  /** Where the record layer ended up; set by the pipeline once the record layer is chosen (proxy/pipeline/record-layer.ts). */
  ktls: 'on' | 'off';
}
