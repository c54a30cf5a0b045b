// The rig of the installKtls tests, on the host (test/unit/ktls-install-fallback:
// the install fails for real) and in the lab (test/kernel/handoff-*: it
// succeeds): an echo server that hands every connection off through the
// HandshakeEngine and installs it, and the clients that drive it.
// (Also compiled for the lab VM.)
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { HandshakeEngine } from '../../proxy/handshake/engine.js';
import type { NegotiatedFacts } from '../../proxy/handshake/engine.js';
import type { KtlsDecision } from '../../proxy/ktls/decision.js';
import type { KtlsErrorClass } from '../../proxy/ktls/errno.js';
import { installKtls } from '../../proxy/record-layer/install.js';
import type { InstallInput, InstallResult } from '../../proxy/record-layer/install.js';
import type { RecordLayerStats } from '../../proxy/record-layer/paths.js';
import { native, socketFd } from '../../native/index.js';
import type { KtlsNative } from '../../native/index.js';
import type { Teardown } from './teardown.js';

export interface HandoffEchoOptions {
  /** The TLS server's options (key, cert, versions, suites). */
  tls: tls.TlsOptions;
  handshakeTimeoutMs?: number;
  /** The decision for a connection from its negotiated facts; a `userspace` one keeps the record layer in JS (no kernel install). */
  decide(facts: NegotiatedFacts): KtlsDecision;
  /** The rest of installKtls's input. */
  install: Pick<InstallInput, 'rekeySupported' | 'keyUpdateRateLimit' | 'txKeyRecordLimit' | 'keyUsageCheckWrites' | 'rxExpectNoPad'>;
  /** Called after the hand-off, before the install. */
  onHandoff?(): void;
  /** The addon given to installKtls (default: the real one), e.g. one whose setOption refuses. */
  native?: KtlsNative;
}

export interface EchoedConnection {
  decision: KtlsDecision;
  install: InstallResult;
  /** Bytes of client records the engine handed over with the hand-off. */
  leftover: number;
  /** getsockopt(TLS_TX) / getsockopt(TLS_RX) read an installed state right after the install. */
  kernelTx: boolean;
  kernelRx: boolean;
  /**
   * getsockopt(TLS_RX_EXPECT_NO_PAD) right after the install: the flag, or the
   * errno name of the refusal (EINVAL without a TLS 1.3 RX in the kernel).
   */
  rxNoPad: boolean | string;
  /** The same after each `rx:ok` KeyUpdate event (a new TLS_RX key). */
  rxNoPadAfterKeyUpdate: Array<boolean | string>;
  /** installFailed events (the install's errors before any key reached the kernel). */
  failures: KtlsErrorClass[];
  /** syscallError events, as `stage:errno`. */
  syscallErrors: string[];
  /** keyUpdate events, as `direction:result`. */
  keyUpdates: string[];
  /** The stream's stats once it closed. */
  stats: Promise<RecordLayerStats>;
}

/** Echo server on 127.0.0.1:0; `served[i]` settles with the i-th connection's install. Closed at teardown. */
export async function startHandoffEcho(t: Teardown, o: HandoffEchoOptions): Promise<{ port: number; served: Promise<EchoedConnection>[] }> {
  const engine = new HandshakeEngine(tls.createServer(o.tls), { handshakeTimeoutMs: o.handshakeTimeoutMs ?? 60_000, maxBufferedBytes: 1 << 20 });
  const served: Promise<EchoedConnection>[] = [];
  const server = net.createServer((raw) => {
    served.push((async () => {
      let decision = null as KtlsDecision | null;
      const hs = await engine.accept(raw, {
        offload: (facts) => {
          decision = o.decide(facts);
          return decision.mode !== 'userspace';
        },
      });
      if (hs.mode !== 'handoff') throw new Error(`no hand-off: ${hs.reason} (${decision?.reason ?? 'offload not asked'})`);
      if (!decision) throw new Error('hand-off without a decision');
      const fd = socketFd(hs.raw)!;
      const leftover = hs.leftover.length;
      o.onHandoff?.();
      const failures: KtlsErrorClass[] = [];
      const syscallErrors: string[] = [];
      const keyUpdates: string[] = [];
      const noPad = (): boolean | string => {
        try {
          return native().getOption(fd, 'TLS_RX_EXPECT_NO_PAD');
        } catch (err) {
          return (err as { code?: string }).code ?? String(err);
        }
      };
      const rxNoPadAfterKeyUpdate: Array<boolean | string> = [];
      const install = await installKtls({
        handoff: hs,
        decision,
        native: o.native ?? native(),
        ...o.install,
        events: {
          installFailed: (i) => failures.push(i),
          syscallError: (i) => syscallErrors.push(`${i.stage}:${i.errno}`),
          keyUpdate: (d, r) => {
            keyUpdates.push(`${d}:${r}`);
            if (d === 'rx' && r === 'ok') rxNoPadAfterKeyUpdate.push(noPad());
          },
        },
      });
      const rxNoPad = noPad();
      const kernelHas = (dir: 'tx' | 'rx'): boolean => {
        try {
          return native().getCryptoInfo(fd, dir).recSeq >= 0n;
        } catch {
          return false; // not installed
        }
      };
      const kernelTx = kernelHas('tx');
      const kernelRx = kernelHas('rx');
      const s = install.stream;
      s.on('data', (d: Buffer) => s.write(d));
      s.on('error', () => {});
      const stats = new Promise<RecordLayerStats>((resolve) => s.on('close', () => resolve(s.stats())));
      return { decision, install, leftover, kernelTx, kernelRx, rxNoPad, rxNoPadAfterKeyUpdate, failures, syscallErrors, keyUpdates, stats };
    })());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    engine.close();
  });
  return { port: (server.address() as net.AddressInfo).port, served };
}

/** Collect `c`'s echo of `expected` bytes, then end() (close_notify); resolves at the server's end. */
export function readEchoThenEnd(c: tls.TLSSocket, expected: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let n = 0;
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n === expected) c.end();
    });
    c.on('end', () => resolve(Buffer.concat(got)));
    c.on('error', reject);
  });
}

/**
 * TLS 1.3 client: `count` random chunks of `size` bytes, one per round trip
 * (each echo is its own server write: many records for a low TX key usage
 * limit); resolves at close with what it sent, what came back and the error if any.
 */
export function pingPong(port: number, count = 20, size = 3000): Promise<{ sent: Buffer; echoed: Buffer; error: string | null }> {
  const chunks = Array.from({ length: count }, () => randomBytes(size));
  return new Promise((resolve) => {
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    const got: Buffer[] = [];
    let n = 0;
    let i = 0;
    let sent = 0;
    const total = chunks.reduce((a, b) => a + b.length, 0);
    const send = (): void => {
      const ch = chunks[i++]!;
      sent += ch.length;
      c.write(ch);
    };
    c.once('secureConnect', send);
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n === total) c.end();
      else if (n === sent) send();
    });
    let error: string | null = null;
    c.on('error', (e: Error) => (error = e.message));
    c.on('close', () => resolve({ sent: Buffer.concat(chunks), echoed: Buffer.concat(got), error }));
  });
}

/**
 * openssl s_client (TLS 1.3, plus `args`), one line at a time: a data line is
 * sent after the previous echo came back; `K`/`k` (KeyUpdate commands) are
 * given `commandPauseMs` of their own. EOF at the end: close_notify and exit.
 */
export function sClientLines(port: number, steps: string[], opts: { args?: string[]; commandPauseMs: number }): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    // No -quiet: it turns the K/k commands off.
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_3', ...(opts.args ?? [])], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let i = 0;
    let started = false;
    let waitingFor: string | null = null;
    const next = (): void => {
      if (i >= steps.length) {
        p.stdin.end();
        return;
      }
      const line = steps[i++]!;
      if (!p.stdin.writable) return;
      p.stdin.write(`${line}\n`);
      // s_client consumes a command line itself; let it have its own read() before the next line.
      if (line === 'K' || line === 'k') setTimeout(next, opts.commandPauseMs);
      else waitingFor = line;
    };
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && /Verify return code/.test(out)) {
        started = true;
        next();
      } else if (waitingFor && out.includes(`${waitingFor}\n`)) {
        waitingFor = null;
        next();
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdin.on('error', () => {});
    p.on('close', (code) => resolve({ code, out, err }));
  });
}
