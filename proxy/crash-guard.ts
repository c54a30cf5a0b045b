// The last resort of the serve command: one connection's failure must not
// end the process. An exception nobody caught (e.g. Node's own
// ERR_INTERNAL_ASSERTION in TLS over a JS stream, nodejs/node#35384) or a
// rejected promise nobody handled is logged — once per distinct error, with
// its stack — counted (`ktls_sidecar_internal_errors_total{kind}`), and the
// sidecar keeps serving its other connections. A process that keeps failing
// is broken, not unlucky: more than `maxErrors` within `windowMs` and it exits
// non-zero so the orchestrator restarts it.
//
// Never key material: only the error's name, code, message and stack reach
// the log, under `err` as the standard serializer names them (type = name);
// not its other properties, which could hold buffers.

import type { InternalErrorKind } from './vocabulary.js';

type CaughtKind = Extract<InternalErrorKind, 'uncaught_exception' | 'unhandled_rejection'>;

/** What the guard needs from a logger (a pino Logger fits). */
export interface GuardLogger {
  error(obj: Record<string, unknown>, msg: string): void;
  fatal(obj: Record<string, unknown>, msg: string): void;
}

export interface CrashGuardOptions {
  readonly logger: GuardLogger;
  /** Count one caught error (metrics.internalError). */
  readonly count: (kind: CaughtKind) => void;
  /** More than this many errors within `windowMs` → exit (default 10). */
  readonly maxErrors?: number;
  readonly windowMs?: number;
  /** Exit code when the limit is passed (default 1, "runtime failure"). */
  readonly exitCode?: number;
  /** Tests: the process to guard, the clock and the exit. */
  readonly target?: Pick<NodeJS.Process, 'on' | 'off'>;
  readonly now?: () => number;
  readonly exit?: (code: number) => void;
}

/** Distinct errors remembered for "log once"; past this, new ones are still counted but logged as one summary. */
const MAX_DISTINCT = 100;

interface ErrorView {
  name: string;
  code: string | undefined;
  message: string;
  stack: string | undefined;
}

function viewOf(err: unknown): ErrorView {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, code: typeof code === 'string' ? code : undefined, message: err.message, stack: err.stack };
  }
  // A thrown non-Error: its type only (its value could be anything).
  return { name: typeof err, code: undefined, message: `non-Error value thrown (${typeof err})`, stack: undefined };
}

/** Same error = same name, code and the top of the stack (messages can carry per-connection details). */
function fingerprint(v: ErrorView): string {
  const frames = (v.stack ?? '').split('\n').filter((l) => l.trimStart().startsWith('at ')).slice(0, 3).join('|');
  return `${v.name}|${v.code ?? ''}|${frames || v.message}`;
}

/**
 * Install the handlers on `process` (or `target`); returns a function that
 * removes them. Call once, in the serve command only: a library must not
 * swallow its host's errors.
 */
export function installCrashGuard(opts: CrashGuardOptions): () => void {
  const target = opts.target ?? process;
  const now = opts.now ?? (() => Date.now());
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const maxErrors = opts.maxErrors ?? 10;
  const windowMs = opts.windowMs ?? 60_000;
  const seen = new Map<string, number>();
  const recent: number[] = [];
  let exiting = false;

  const handle = (kind: CaughtKind, err: unknown): void => {
    if (exiting) return;
    const v = viewOf(err);
    try {
      opts.count(kind);
      const key = fingerprint(v);
      const n = (seen.get(key) ?? 0) + 1;
      if (seen.has(key) || seen.size < MAX_DISTINCT) seen.set(key, n);
      if (n === 1) {
        opts.logger.error(
          // Under `err` in the standard serializer's shape, built here from the four fields only.
          { event: 'internal_error', kind, err: { type: v.name, message: v.message, code: v.code, stack: v.stack } },
          `${kind.replace('_', ' ')}: the connection it hit is lost, the sidecar keeps serving (logged once per distinct error)`,
        );
      }
    } catch {
      // The guard itself must never throw: that would end the process it guards.
    }
    const t = now();
    recent.push(t);
    while (recent.length > 0 && t - (recent[0] ?? t) >= windowMs) recent.shift();
    if (recent.length > maxErrors) {
      exiting = true;
      try {
        opts.logger.fatal(
          { event: 'internal_error_limit', errors: recent.length, window_ms: windowMs, exit_code: opts.exitCode ?? 1 },
          `more than ${maxErrors} internal errors within ${windowMs} ms: exiting to be restarted`,
        );
      } finally {
        exit(opts.exitCode ?? 1);
      }
    }
  };
  const onException = (err: unknown, origin?: string): void =>
    handle(origin === 'unhandledRejection' ? 'unhandled_rejection' : 'uncaught_exception', err);
  const onRejection = (reason: unknown): void => handle('unhandled_rejection', reason);
  target.on('uncaughtException', onException);
  target.on('unhandledRejection', onRejection);
  return () => {
    target.off('uncaughtException', onException);
    target.off('unhandledRejection', onRejection);
  };
}
