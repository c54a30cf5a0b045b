// Loopback TCP pairs and small waits for the kernel tests of the native shim.
import net from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import type { KtlsNative, RecvRecordResult, SplicePump, SpliceResult } from '../../../native/index.js';
import { native, socketFd } from '../../../native/index.js';
import { type HashReader, hashReads } from '../../helpers/hash-reader.js';
import type { Teardown } from '../../helpers/teardown.js';
import { type KnownKeys, cryptoInfo, splitRecords } from './records.js';

export const inLab = process.env['KTLS_LAB'] === '1';
/** tap `skip` value: the kernel tests only run in the lab VM. */
export const skipOutsideLab: string | false = inLab ? false : 'not in the kernel lab VM (run `npm run test:kernel`)';

/** Linux >= 6.14 takes a second TLS 1.3 key (KeyUpdate). */
export function kernelHasRekey(rel: string = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  return !!m && (Number(m[1]) > 6 || (Number(m[1]) === 6 && Number(m[2]) >= 14));
}

export interface Pair {
  client: net.Socket;
  server: net.Socket;
  cfd: number;
  sfd: number;
  close(): void;
}

/**
 * A connected loopback pair on port 0. Neither side is read by Node (paused before the
 * first read), so kTLS can own the byte stream; use `rawReader` for a plain side.
 */
export async function tcpPair(): Promise<Pair> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ port, host: '127.0.0.1', noDelay: true });
  client.pause(); // before 'connect': Node then never starts reading it
  await new Promise<void>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const srv = await accepted;
  server.close();
  for (const s of [client, srv]) s.on('error', () => undefined);
  const cfd = socketFd(client);
  const sfd = socketFd(srv);
  if (cfd === null || sfd === null) throw new Error('loopback socket without an fd');
  return {
    client,
    server: srv,
    cfd,
    sfd,
    close() {
      client.destroy();
      srv.destroy();
    },
  };
}

/**
 * A tcpPair closed at teardown, with kTLS installed from known keys: TX on the
 * client side (`cfd`) if `tx` is given, RX on the server side (`sfd`) if `rx` is.
 */
export async function ktlsPair(t: Teardown, keys: { tx?: KnownKeys; rx?: KnownKeys } = {}): Promise<Pair> {
  const n = native();
  const p = await tcpPair();
  t.teardown(() => p.close());
  if (keys.tx) {
    n.attachUlp(p.cfd);
    n.setCryptoInfo(p.cfd, 'tx', cryptoInfo(keys.tx));
  }
  if (keys.rx) {
    n.attachUlp(p.sfd);
    n.setCryptoInfo(p.sfd, 'rx', cryptoInfo(keys.rx));
  }
  return p;
}

/** The error `fn` throws, or null. */
export function catchErr(fn: () => unknown): unknown {
  try {
    fn();
    return null;
  } catch (e) {
    return e;
  }
}

/** Collects whole TLS records arriving on a plain (non-kTLS) socket. */
export function rawReader(sock: net.Socket): { next(): Promise<Buffer> } {
  let buf = Buffer.alloc(0);
  const ready: Buffer[] = [];
  let waiter: ((b: Buffer) => void) | null = null;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    const { records, rest } = splitRecords(buf);
    buf = Buffer.from(rest);
    for (const r of records) {
      if (waiter) {
        const w = waiter;
        waiter = null;
        w(Buffer.from(r));
      } else ready.push(Buffer.from(r));
    }
  });
  sock.resume();
  return {
    next: () =>
      new Promise((resolve) => {
        const r = ready.shift();
        if (r) resolve(r);
        else waiter = resolve;
      }),
  };
}

/** Resolves once fd is readable (through the shim's own poller, which this also exercises). */
export function waitReadable(n: KtlsNative, fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = n.createPoller(fd, (err) => {
      p.close();
      if (err) reject(err);
      else resolve();
    });
    p.start();
  });
}

/** recvRecord, waiting through EAGAIN. Syscall errors (EBADMSG, EKEYEXPIRED, …) reject. */
export async function recvRecordWait(n: KtlsNative, fd: number, buf: Buffer): Promise<RecvRecordResult> {
  for (;;) {
    const r = n.recvRecord(fd, buf);
    if (r !== null) return r;
    await waitReadable(n, fd);
  }
}

/** /proc/net/tls_stat, read directly (independent of proxy/ktls/tls-stat.ts). */
export function tlsCounter(name: string): number {
  if (!existsSync('/proc/net/tls_stat')) return -1;
  const m = new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(readFileSync('/proc/net/tls_stat', 'utf8'));
  return m?.[1] ? Number(m[1]) : -1;
}

/** A splice pump whose runs can be awaited (each start() resolves the next `done()`). */
export interface AwaitablePump {
  pump: SplicePump;
  /** The next onDone; call before start(). */
  done: () => Promise<SpliceResult>;
  /** Every onDone so far (to catch a second call for one run). */
  results: SpliceResult[];
}

/** createSplicePump(from, to) closed at teardown, with awaitable runs. */
export function awaitablePump(t: Teardown, n: KtlsNative, from: number, to: number): AwaitablePump {
  const results: SpliceResult[] = [];
  let waiter: ((r: SpliceResult) => void) | null = null;
  const pump = n.createSplicePump(from, to, (r) => {
    results.push(r);
    const w = waiter;
    waiter = null;
    w?.(r);
  });
  t.teardown(() => pump.close());
  return {
    pump,
    results,
    done: () =>
      new Promise((resolve) => {
        waiter = resolve;
      }),
  };
}

/** sha256 and byte count of everything Node reads from `sock` (resumes it). */
export function hashReader(sock: net.Socket): HashReader {
  const reader = hashReads(sock);
  sock.resume();
  return reader;
}
