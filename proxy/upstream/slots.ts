// Who may use the upstream connections of http mode: at most
// upstream.maxSockets requests are forwarded at once, each holding one
// socket; up to upstream.maxPending more wait (FIFO) for a slot, at most
// `waitMs` (waiting for a slot is part of getting an upstream connection, so
// timeouts.upstreamConnect bounds it); past either bound the caller is told
// the upstream is overloaded. A slot is held until the response closes, so
// busy sockets never outnumber slots (pool.ts connects only when none is idle).

/** What the slots watch of a response: its end, which frees the slot. */
interface Closing {
  once(event: 'close', listener: () => void): unknown;
}

/** A request waiting for a slot. */
interface Waiting {
  run: () => void;
  timer: NodeJS.Timeout | undefined;
}

export class UpstreamSlots {
  /** Requests forwarded now (each holds or waits for one upstream socket). */
  private active = 0;
  /** Requests waiting for a slot, oldest first. */
  private readonly waiting = new Set<Waiting>();

  constructor(
    private readonly maxSockets: number,
    private readonly maxPending: number,
    private readonly waitMs: number,
  ) {}

  /**
   * `run` now if a slot is free, else once one is (queued, bounded, no longer
   * than waitMs), else `overloaded`. The slot is held until `res` closes.
   */
  admit(res: Closing, run: () => void, overloaded: () => void): void {
    if (this.active < this.maxSockets) {
      this.start(res, run);
      return;
    }
    if (this.waiting.size >= this.maxPending) {
      overloaded();
      return;
    }
    const entry: Waiting = { run: () => this.start(res, run), timer: undefined };
    this.waiting.add(entry);
    if (this.waitMs > 0) {
      entry.timer = setTimeout(() => {
        this.waiting.delete(entry);
        overloaded();
      }, this.waitMs);
    }
    res.once('close', () => {
      if (this.waiting.delete(entry)) clearTimeout(entry.timer);
    });
  }

  close(): void {
    for (const w of this.waiting) clearTimeout(w.timer);
    this.waiting.clear();
  }

  private start(res: Closing, run: () => void): void {
    this.active++;
    res.once('close', () => {
      this.active--;
      this.next();
    });
    run();
  }

  /** Give freed slots to the oldest waiting requests. */
  private next(): void {
    for (const entry of this.waiting) {
      if (this.active >= this.maxSockets) return;
      this.waiting.delete(entry);
      clearTimeout(entry.timer);
      entry.run();
    }
  }
}
