// Look at the first bytes of an accepted connection before TLS touches it, so
// a plain-HTTP client on the TLS port gets a readable 400 instead of a TLS
// alert, and garbage is dropped early. The bytes read are unshifted back into
// the socket; node's TLS wrap feeds already-buffered data into the TLS handle
// (initRead in _tls_wrap), so nothing is lost (test/integration/sniff.test.ts).
import type net from 'node:net';

export type SniffVerdict = 'tls' | 'http' | 'garbage';

/** TLS record content type `handshake` (22): every ClientHello starts with it. */
const TLS_HANDSHAKE = 0x16;
/** Request methods we recognise as someone speaking plain HTTP to us (incl. the h2c preface "PRI"). */
const HTTP_START = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PRI) /;

/** Classify the first bytes a client sent. Pure, so the rules are unit-testable. */
export function classifyFirstBytes(first: Buffer): SniffVerdict {
  if (first.length === 0) return 'garbage';
  // Record header: type 0x16, version major 3. One byte is enough for a verdict
  // when that is all we have; the TLS stack rejects a bad version later anyway.
  if (first[0] === TLS_HANDSHAKE && (first.length < 2 || first[1] === 0x03)) return 'tls';
  if (HTTP_START.test(first.subarray(0, 16).toString('latin1'))) return 'http';
  return 'garbage';
}

/** The short answer to a plain-HTTP request on the TLS port. */
export function plainHttpResponse(): string {
  const body = 'This port speaks TLS (HTTPS). Use https:// to reach it.\n';
  return (
    'HTTP/1.1 400 Bad Request\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

/**
 * Wait for the first chunk, classify it and put it back. Resolves 'closed' when
 * the peer goes away first (FIN or reset). The caller owns the timeout (it
 * destroys the socket, which settles this promise as 'closed'), and on 'closed'
 * must destroy the socket itself: an allowHalfOpen socket that saw the peer's
 * FIN stays open (CLOSE-WAIT) until our side is closed.
 */
export function sniff(socket: net.Socket): Promise<SniffVerdict | 'closed'> {
  return new Promise((resolve) => {
    const done = (v: SniffVerdict | 'closed'): void => {
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      socket.off('end', onClose);
      resolve(v);
    };
    const onClose = (): void => done('closed');
    const onReadable = (): void => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) return;
      socket.unshift(chunk);
      done(classifyFirstBytes(chunk));
    };
    socket.on('readable', onReadable);
    socket.once('close', onClose);
    socket.once('end', onClose);
  });
}
