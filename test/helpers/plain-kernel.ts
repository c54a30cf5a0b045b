// The record layer's "kernel" played on plain loopback TCP, for host tests
// (the host has no kTLS): the real addon (poller, splice pump, recvPlain,
// sendPlain) with the kTLS-only calls faked. TX: the kernel's records are the
// bytes themselves; RX: recvRecord is a plain recv, every read "application
// data"; a control record is, when asked for, a marker `|type:hex|` written
// straight to the fd (as sendmsg would, past libuv).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import { type KtlsNative, native as loadNative, socketFd } from '../../native/index.js';
import { stopReading } from '../../proxy/handshake/read-control.js';
import { RecordLayerStream } from '../../proxy/record-layer/stream.js';
import type { RecordLayerStreamOptions } from '../../proxy/record-layer/stream.js';
import { ContentType } from '../../proxy/tls/control.js';
import { RecordProtection } from '../../proxy/tls/record-protection.js';

/** What the faked kernel was asked, for tests that count syscalls. */
export interface KernelCalls {
  /** recvRecord calls, and how many of them found nothing (EAGAIN). */
  recv: number;
  again: number;
  /** sendPlain calls, and how many sent less than they were given (EAGAIN or partial). */
  send: number;
  sendShort: number;
}

export const kernelCalls = (): KernelCalls => ({ recv: 0, again: 0, send: 0, sendShort: 0 });

export interface PlainKernelOptions {
  calls?: KernelCalls;
  /** Write control records to this fd as markers; otherwise they vanish (reported as sent). */
  markerFd?: () => number;
}

export function plainKernel(real: KtlsNative, opts: PlainKernelOptions = {}): KtlsNative {
  const calls = opts.calls ?? kernelCalls();
  return Object.assign(Object.create(real) as KtlsNative, {
    getCryptoInfo: () => ({ version: 'TLSv1.3', cipher: 'AES_GCM_128', recSeq: 0n }),
    setCryptoInfo: () => undefined,
    sendRecord: (_fd: number, type: number, data: Buffer): number => {
      if (!opts.markerFd) return data.length;
      const marker = Buffer.from(`|${type}:${data.toString('hex')}|`);
      try {
        if (fs.writeSync(opts.markerFd(), marker) !== marker.length) throw new Error('partial marker write');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return -1;
        throw err;
      }
      return data.length;
    },
    sendPlain: (fd: number, data: Buffer): number => {
      calls.send++;
      const n = real.sendPlain(fd, data);
      if (n < data.length) calls.sendShort++;
      return n;
    },
    recvRecord: (rfd: number, buf: Buffer) => {
      calls.recv++;
      const r = real.recvPlain(rfd, buf);
      if (r === null) {
        calls.again++;
        return null;
      }
      return r.eof || r.bytes === 0 ? { type: 0, bytes: 0, eof: true } : { type: ContentType.APPLICATION_DATA, bytes: r.bytes, eof: false };
    },
  });
}

export function fdOf(s: net.Socket): number {
  const fd = socketFd(s);
  if (fd === null) throw new Error('no fd');
  return fd;
}

/**
 * Like the hand-off: libuv reads `raw` no more, and a RecordLayerStream with
 * both directions in the (played) kernel takes it over. `extra` adds or
 * overrides stream options (splice, events, rxWholeRecordPoll...).
 */
export function plainKernelStream(
  raw: net.Socket,
  kernel: PlainKernelOptions & { markers?: boolean } = {},
  extra: Partial<RecordLayerStreamOptions> = {},
): RecordLayerStream {
  stopReading(raw);
  const fd = fdOf(raw);
  const secret = randomBytes(32);
  const native = plainKernel(loadNative(), { calls: kernel.calls, markerFd: kernel.markers ? () => fd : kernel.markerFd });
  return new RecordLayerStream({
    raw,
    fd,
    native,
    version: 'TLSv1.3',
    cipher: 'AES_GCM_128',
    tx: { side: 'kernel', keys: RecordProtection.tls13('AES_GCM_128', secret) },
    rx: { side: 'kernel', keys: null },
    rekeySupported: true,
    keyUpdateRateLimit: 100,
    allowHalfOpen: true,
    ...extra,
  });
}
