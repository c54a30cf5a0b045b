// What /readyz reports (the admin server serves it, the Sidecar answers it):
// listening, certificates loaded and not expired, upstream accepts TCP (a
// cached probe), not draining.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { CertSummary } from './tls/certs.js';

export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: string;
}

export interface Readiness {
  readonly ready: boolean;
  readonly checks: readonly ReadinessCheck[];
}

/** How long a cached upstream probe result is trusted. */
const PROBE_TTL_MS = 2000;
const PROBE_TIMEOUT_MS = 1000;

export function certificateCheck(c: Pick<CertSummary, 'subject' | 'notAfter'>): ReadinessCheck {
  const expired = Date.parse(c.notAfter) <= Date.now();
  return { name: 'certificates', ok: !expired, detail: `${c.subject}, not after ${c.notAfter}${expired ? ' (expired)' : ''}` };
}

/** A TCP connect to the upstream, cached for PROBE_TTL_MS; concurrent asks share one probe. */
export class UpstreamProbe {
  private last: { at: number; check: ReadinessCheck } | undefined;
  private inFlight: Promise<ReadinessCheck> | undefined;

  /** Forget the cached result (the upstream may have moved with a reload). */
  reset(): void {
    this.last = undefined;
  }

  check(target: () => { host: string; port: number }): Promise<ReadinessCheck> {
    const now = performance.now();
    if (this.last && now - this.last.at < PROBE_TTL_MS) return Promise.resolve(this.last.check);
    if (this.inFlight) return this.inFlight;
    const { host, port } = target();
    this.inFlight = new Promise<ReadinessCheck>((resolve) => {
      const s = net.connect({ host, port });
      const done = (ok: boolean, detail: string): void => {
        s.destroy();
        clearTimeout(t);
        const check = { name: 'upstream', ok, detail };
        this.last = { at: performance.now(), check };
        this.inFlight = undefined;
        resolve(check);
      };
      const t = setTimeout(() => done(false, `${host}:${port} connect timeout`), PROBE_TIMEOUT_MS);
      s.once('connect', () => done(true, `${host}:${port}`));
      s.once('error', (err: NodeJS.ErrnoException) => done(false, `${host}:${port} ${err.code ?? err.message}`));
    });
    return this.inFlight;
  }
}
