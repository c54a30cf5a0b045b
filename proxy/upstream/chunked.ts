// The chunked transfer coding of an upstream response, decoded strictly
// (RFC 9112 §7.1): hex sizes (at most 13 digits), extensions skipped, CRLF
// everywhere (a bare LF or a missing CRLF after the data is an error), trailer
// fields read and dropped (the client gets the body, re-framed by node).
// A state machine fed the socket's buffers as they come: data sections are
// handed on as slices, never copied.

/** Where decoded body bytes go. */
export interface BodySink {
  decoded(chunk: Buffer): void;
}

/** The code upstreamReason() counts as `protocol`. */
export class ChunkedError extends Error {
  readonly code = 'HPE_INVALID_CHUNK_SIZE';
  constructor(message: string) {
    super(`upstream chunked body: ${message}`);
  }
}

/** Decoder states. */
const S = { Size: 0, Ext: 1, SizeLf: 2, Data: 3, DataCr: 4, DataLf: 5, TrailerStart: 6, TrailerLine: 7, TrailerLf: 8, EndLf: 9, Done: 10 } as const;

const CR = 13;
const LF = 10;
/** Trailer fields are dropped, but not read without bound. */
const MAX_TRAILER = 64 * 1024;

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

export class ChunkedDecoder {
  private state: number = S.Size;
  private size = 0;
  private digits = 0;
  private trailerBytes = 0;

  get done(): boolean {
    return this.state === S.Done;
  }

  /**
   * Decode buf[from..]; body bytes go to `sink`. Returns the offset just past
   * the end of the message, or -1 when more is needed. Throws ChunkedError.
   */
  feed(buf: Buffer, from: number, sink: BodySink): number {
    let i = from;
    const n = buf.length;
    while (i < n) {
      const c = buf[i] as number;
      switch (this.state) {
        case S.Size: {
          if (c === CR) {
            if (this.digits === 0) throw new ChunkedError('no chunk size');
            this.state = S.SizeLf;
          } else if (c === 59 /* ; */) {
            if (this.digits === 0) throw new ChunkedError('no chunk size');
            this.state = S.Ext;
          } else {
            const v = hexValue(c);
            if (v < 0 || ++this.digits > 13) throw new ChunkedError('bad chunk size');
            this.size = this.size * 16 + v;
          }
          i++;
          break;
        }
        case S.Ext:
          if (c === CR) this.state = S.SizeLf;
          else if (c === LF) throw new ChunkedError('bare LF');
          i++;
          break;
        case S.SizeLf:
          if (c !== LF) throw new ChunkedError('CR without LF');
          this.state = this.size === 0 ? S.TrailerStart : S.Data;
          i++;
          break;
        case S.Data: {
          const take = Math.min(this.size, n - i);
          sink.decoded(take === n - i && i === 0 ? buf : buf.subarray(i, i + take));
          this.size -= take;
          i += take;
          if (this.size === 0) this.state = S.DataCr;
          break;
        }
        case S.DataCr:
          if (c !== CR) throw new ChunkedError('no CRLF after chunk data');
          this.state = S.DataLf;
          i++;
          break;
        case S.DataLf:
          if (c !== LF) throw new ChunkedError('no CRLF after chunk data');
          this.state = S.Size;
          this.digits = 0;
          i++;
          break;
        case S.TrailerStart:
          if (c === CR) this.state = S.EndLf;
          else if (c === LF) throw new ChunkedError('bare LF');
          else this.state = S.TrailerLine;
          i++;
          break;
        case S.TrailerLine:
          if (c === CR) this.state = S.TrailerLf;
          else if (c === LF) throw new ChunkedError('bare LF');
          if (++this.trailerBytes > MAX_TRAILER) throw new ChunkedError('trailer too large');
          i++;
          break;
        case S.TrailerLf:
          if (c !== LF) throw new ChunkedError('CR without LF');
          this.state = S.TrailerStart;
          i++;
          break;
        case S.EndLf:
          if (c !== LF) throw new ChunkedError('CR without LF');
          this.state = S.Done;
          return i + 1;
        case S.Done:
          return i;
      }
    }
    return this.state === S.Done ? i : -1;
  }
}
