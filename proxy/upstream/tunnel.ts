// A WebSocket handshake forwarded on a fresh upstream connection (never a
// pooled one, never pooled after): on 101 the upstream's head goes to the
// client and the two become one byte stream, piped both ways with
// backpressure; any other answer is relayed as a response on the client's
// connection (re-framed: Content-Length as is, else chunked for HTTP/1.1),
// which then ends. The owner (the HTTP front) counts and answers failures.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { lingerThenDestroy } from '../linger.js';
import { Exchange, type ExchangeFailure } from './exchange.js';
import { countRelayed } from './external-memory.js';
import type { UpstreamPool } from './pool.js';
import type { ResponseHead } from './response-head.js';

export interface TunnelOwner {
  /** The status the upstream answered (101 when it switched). */
  answered(status: number): void;
  /** The upstream failed; `headSent`: the client got a head already (then only a cut is left). */
  failed(failure: ExchangeFailure, headSent: boolean): void;
  /** A relayed non-101 response is complete: end the client's connection. */
  done(): void;
  /**
   * After the switch: the byte stream through the splice pump where the
   * client's record layer can lend TX (the owner's TcpSplice), or null for
   * JS pipes. It is started once the 101 head and the bytes before it are
   * written; client → upstream stays piped (it carries what JS decrypts and
   * the client's end), and the owner counts and closes on its failures.
   */
  splice?(upstream: net.Socket): { start(): void } | null;
}

function fields(flat: readonly string[]): string {
  let out = '';
  for (let i = 0; i < flat.length; i += 2) out += `${flat[i] as string}: ${flat[i + 1] as string}\r\n`;
  return out;
}

export class Tunnel extends Exchange {
  private chunked = false;
  private onClientDrain: (() => void) | undefined;

  constructor(
    pool: UpstreamPool,
    private readonly client: Duplex,
    /** Bytes the client sent after its handshake head: the upstream gets them once it switched. */
    private readonly clientHead: Buffer,
    /** The client spoke HTTP/1.1 (a relayed response may then be chunked). */
    private readonly http11: boolean,
    private readonly owner: TunnelOwner,
  ) {
    super(pool);
    this.upgrade = true;
  }

  /** Send the handshake (`head`: request line and fields, CRLF CRLF included). */
  open(head: string): void {
    this.client.once('close', () => this.abort());
    this.send(head, undefined, false, false, true);
  }

  protected override onSwitch(head: ResponseHead, upstream: net.Socket, rest: Buffer): void {
    const client = this.client;
    this.owner.answered(101);
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    const splice = this.owner.splice?.(upstream) ?? null;
    // Spliced: nothing more is read in JS; what Node already read goes to the client before the pump's first byte.
    if (splice) upstream.pause();
    // The pump starts once JS's bytes were handed to the record layer, which queues the lend behind them.
    const written = (): void => {
      if (splice && !client.destroyed && !upstream.destroyed) splice.start();
    };
    const head101 = `HTTP/1.1 101 ${head.reason || 'Switching Protocols'}\r\n${fields(head.headers)}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
    if (rest.length > 0) {
      client.write(head101, 'latin1');
      client.write(rest, written);
    } else client.write(head101, 'latin1', written);
    if (this.clientHead.length > 0) upstream.write(this.clientHead);
    let failed = false;
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (failed) return;
      failed = true;
      this.owner.failed({ err, timedOut: undefined, staleSocket: false }, true);
      client.destroy();
    });
    client.on('error', () => upstream.destroy());
    upstream.once('close', () => {
      // The tunnel is over: what the client still sends has nowhere to go.
      // End our side and read on, dropping, until the client's FIN (bounded
      // by the linger): unpiped, the client would be paused, never see that
      // FIN, and hold its connection open for good.
      if (client.destroyed) return;
      client.unpipe(upstream);
      client.end();
      client.resume();
      lingerThenDestroy(client);
    });
    // A spliced upstream is not read by JS: its end would never be seen after ours.
    client.once('close', () => (splice ? upstream.destroy() : upstream.end()));
    client.pipe(upstream);
    countRelayed(client);
    if (splice) return;
    upstream.pipe(client);
    countRelayed(upstream);
  }

  protected onHead(head: ResponseHead): void {
    this.owner.answered(head.status);
    let framing = '';
    const length = head.framing === 'length' || head.status === 204 || head.status === 304;
    if (head.framing === 'length') framing = `Content-Length: ${head.contentLength}\r\n`;
    else if (!length && this.http11) {
      this.chunked = true;
      framing = 'Transfer-Encoding: chunked\r\n';
    }
    this.client.write(`HTTP/${this.http11 ? '1.1' : '1.0'} ${head.status} ${head.reason}\r\n${fields(head.headers)}${framing}Connection: close\r\n\r\n`, 'latin1');
  }

  protected onBody(chunk: Buffer): void {
    const client = this.client;
    let ok: boolean;
    if (this.chunked) {
      client.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      client.write(chunk);
      ok = client.write('\r\n', 'latin1');
    } else ok = client.write(chunk);
    if (ok) return;
    this.pauseResponse();
    this.onClientDrain ??= () => this.resumeResponse();
    client.once('drain', this.onClientDrain);
  }

  protected onComplete(last: Buffer | undefined): void {
    if (last) this.onBody(last);
    if (this.chunked) this.client.write('0\r\n\r\n', 'latin1');
    this.owner.done();
  }

  protected onFailure(failure: ExchangeFailure): void {
    this.owner.failed(failure, this.headSeen);
  }
}
