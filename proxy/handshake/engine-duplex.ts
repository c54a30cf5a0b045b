// The Duplex the TLS engine (a server-side tls.TLSSocket) sits on. Node
// documents that a tls.Server's 'connection' event accepts any Duplex;
// using our own means every ciphertext byte in both directions passes
// through code that can frame, inspect, hold back or drop it.

import { Duplex } from 'node:stream';

export interface EngineSink {
  /** OpenSSL wrote ciphertext; call `done` when it may write more. */
  onEngineOutput(chunk: Buffer, done: () => void): void;
  /** OpenSSL wants more input (backpressure released). */
  onEngineRead(): void;
  /** OpenSSL ended its side (after close_notify or a fatal alert). */
  onEngineEnd(): void;
  onEngineDestroyed(): void;
}

export class EngineDuplex extends Duplex {
  constructor(private readonly sink: EngineSink) {
    super({ allowHalfOpen: true });
  }

  override _read(): void {
    this.sink.onEngineRead();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.sink.onEngineOutput(chunk, () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.sink.onEngineEnd();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.sink.onEngineDestroyed();
    callback(error);
  }
}
