// The real answer to "what can this kernel do with kTLS": every setsockopt the
// sidecar will ever make, tried for real on loopback TCP pairs with throw-away
// random keys (as rustls' ktls crate does). One syscall per function below the
// walk; the walk covers every TLS version × kernel cipher, TX on one end of a
// pair and RX on the other, then the options and a second TLS 1.3 TX key
// (rekey: >= 6.14, EBUSY before), and how poll() sees an RX socket holding part
// of a record. The pairs are closed before the walk returns.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { KERNEL_CIPHERS, TLS_VERSIONS, type KernelCipher, type KtlsDirection, type TlsVersion } from '../../native/crypto-info.js';
import { socketFd, type KtlsNative, type KtlsOption } from '../../native/index.js';
import { kernelCryptoInfoSizes } from '../tls/suites.js';
import { classifyKtlsError } from './errno.js';

/** The errno name of a refusal, or null when the kernel accepted. */
export type Refusal = string | null;

export interface KernelTrials {
  /** 'ok', the errno name of the TCP_ULP "tls" refusal, or 'not_tried'. */
  attach: string;
  /** Per `comboKey(version, cipher, direction)`: how installing a key went. */
  ciphers: Map<string, Refusal>;
  /** A second TLS 1.3 TX key on the same socket; undefined when no first TLS 1.3 TX key was accepted. */
  rekey: Refusal | undefined;
  options: Partial<Record<KtlsOption, { supported: boolean; errno: Refusal }>>;
  /**
   * Whether poll() reports a kTLS RX socket readable only once a whole record
   * has arrived (rxWholeRecordPoll); undefined when RX could not be tried.
   */
  rxPoll: RxPollTrial | undefined;
}

/** How readiness of a kTLS RX socket went with part of a record, then all of it. */
export interface RxPollTrial {
  /** Readable while only part of a record had arrived (Linux 6.1 does this). */
  partialReadable: boolean;
  /** Readable once the rest came (the control: without it, the first answer means nothing). */
  wholeReadable: boolean;
}

export const comboKey = (v: TlsVersion, c: KernelCipher, d: KtlsDirection): string => `${v}/${c}/${d}`;

function errnoName(err: unknown): string {
  return classifyKtlsError(err, 'probe').errno;
}

/** setsockopt(TCP_ULP, "tls"). */
function attachUlp(n: KtlsNative, fd: number): Refusal {
  try {
    n.attachUlp(fd);
    return null;
  } catch (err) {
    return errnoName(err);
  }
}

/** setsockopt(SOL_TLS, TLS_TX or TLS_RX) with a random key of the cipher's sizes. */
function installKey(n: KtlsNative, fd: number, direction: KtlsDirection, version: TlsVersion, cipher: KernelCipher): Refusal {
  const s = kernelCryptoInfoSizes(cipher);
  try {
    n.setCryptoInfo(fd, direction, { version, cipher, key: randomBytes(s.key), iv: randomBytes(s.iv), salt: randomBytes(s.salt), recSeq: 0n });
    return null;
  } catch (err) {
    return errnoName(err);
  }
}

/** setsockopt(SOL_TLS, opt, 1), then getsockopt to see whether it stuck. */
function setOption(n: KtlsNative, fd: number, opt: KtlsOption): { supported: boolean; errno: Refusal } {
  try {
    n.setOption(fd, opt, true);
    return { supported: n.getOption(fd, opt), errno: null };
  } catch (err) {
    return { supported: false, errno: errnoName(err) };
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Readiness of a kTLS RX socket with part of a record queued, then the whole
 * record: RX on `s` (TLS 1.3, AES-GCM-128, a random key), the record's
 * header and a few bytes written by the plain `client` end, then the rest.
 * RX may only be polled level-triggered after a short read where the first
 * answer is no: otherwise the poll spins until the rest of a record comes.
 * The record never decrypts (random key); readiness is all we ask.
 */
async function rxPollTrial(n: KtlsNative, fds: { s: number; client: net.Socket }): Promise<RxPollTrial | undefined> {
  if (attachUlp(n, fds.s) !== null || installKey(n, fds.s, 'rx', 'TLSv1.3', 'AES_GCM_128') !== null) return undefined;
  const body = 64;
  const record = Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0, body]), randomBytes(body)]);
  let events = 0;
  // true: "read until EAGAIN", so the poller waits for a NEW event (edge) after each call.
  const poller = n.createPoller(fds.s, () => {
    events++;
    return true;
  });
  try {
    fds.client.write(record.subarray(0, 16));
    await sleep(20); // loopback: queued on `s` long before this
    poller.start(); // an edge-triggered registration reports a readiness already there
    await sleep(30);
    const partialReadable = events > 0;
    fds.client.write(record.subarray(16));
    for (let i = 0; i < 50 && events === 0; i++) await sleep(10);
    return { partialReadable, wholeReadable: events > 0 };
  } finally {
    poller.close();
  }
}

/** Connected loopback TCP pairs through one listener (accepts matched by port), all closed by close(). */
class LoopbackPairs {
  private readonly accepted = new Map<number, net.Socket>();
  private readonly waiters = new Map<number, (s: net.Socket) => void>();
  private readonly sockets: net.Socket[] = [];
  private readonly listener = net.createServer({ pauseOnConnect: true }, (s) => {
    this.sockets.push(s);
    s.on('error', () => undefined);
    const port = s.remotePort ?? -1;
    const w = this.waiters.get(port);
    if (w) {
      this.waiters.delete(port);
      w(s);
    } else this.accepted.set(port, s);
  });

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      // exclusive: in a cluster worker a shared listen would go through the
      // primary, and two workers' probes (or a probe and a TLS listener on
      // 127.0.0.1:0) would get one socket and accept each other's connections.
      this.listener.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => resolve());
    });
  }

  /** The fds of a new pair: `c` the connecting end (also as its socket, `client`), `s` the accepted one. */
  async next(): Promise<{ c: number; s: number; client: net.Socket }> {
    const addr = this.listener.address() as net.AddressInfo;
    const { client, server } = await new Promise<{ client: net.Socket; server: net.Socket }>((resolve, reject) => {
      const client = net.connect({ port: addr.port, host: '127.0.0.1' });
      client.once('error', reject);
      client.once('connect', () => {
        const port = client.localPort ?? -1;
        const done = (server: net.Socket): void => {
          client.removeListener('error', reject);
          resolve({ client, server });
        };
        const ready = this.accepted.get(port);
        if (ready) {
          this.accepted.delete(port);
          done(ready);
        } else this.waiters.set(port, done);
      });
    });
    this.sockets.push(client);
    client.on('error', () => undefined);
    client.pause();
    const c = socketFd(client);
    const s = socketFd(server);
    if (c === null || s === null) throw new Error('no fd on a loopback socket');
    return { c, s, client };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const s of this.accepted.values()) s.destroy();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }
}

/** Walk every version × cipher on real sockets. Throws only when no loopback pair can be opened. */
export async function tryKernel(n: KtlsNative): Promise<KernelTrials> {
  const trials: KernelTrials = { attach: 'not_tried', ciphers: new Map(), rekey: undefined, options: {}, rxPoll: undefined };
  const pairs = new LoopbackPairs();
  try {
    await pairs.listen();
    // The ULP first: without it nothing else can work.
    const first = await pairs.next();
    trials.attach = attachUlp(n, first.c) ?? 'ok';
    if (trials.attach !== 'ok') return trials;
    let reuse: { c: number; s: number } | null = first;
    for (const version of TLS_VERSIONS) {
      for (const cipher of KERNEL_CIPHERS) {
        const fds = reuse ?? (await pairs.next());
        const attached = reuse !== null;
        reuse = null;
        // TX on the client, RX on the server: one pair answers both directions.
        const tx = (attached ? null : attachUlp(n, fds.c)) ?? installKey(n, fds.c, 'tx', version, cipher);
        const rx = attachUlp(n, fds.s) ?? installKey(n, fds.s, 'rx', version, cipher);
        trials.ciphers.set(comboKey(version, cipher, 'tx'), tx);
        trials.ciphers.set(comboKey(version, cipher, 'rx'), rx);
        if (tx === null && trials.options.TLS_TX_ZEROCOPY_RO === undefined) {
          trials.options.TLS_TX_ZEROCOPY_RO = setOption(n, fds.c, 'TLS_TX_ZEROCOPY_RO');
        }
        if (rx === null && version === 'TLSv1.3' && trials.options.TLS_RX_EXPECT_NO_PAD === undefined) {
          trials.options.TLS_RX_EXPECT_NO_PAD = setOption(n, fds.s, 'TLS_RX_EXPECT_NO_PAD');
        }
        // Rekey: a second TLS 1.3 TX key on the same socket.
        if (tx === null && version === 'TLSv1.3' && trials.rekey === undefined) {
          trials.rekey = installKey(n, fds.c, 'tx', version, cipher);
        }
      }
    }
    trials.rxPoll = await rxPollTrial(n, await pairs.next());
    return trials;
  } finally {
    await pairs.close();
  }
}
