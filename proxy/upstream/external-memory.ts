// Young socket Buffers, freed by scavenges. Every byte the sidecar relays
// arrives as a Buffer from a socket read, with its memory outside V8's heap.
// V8 frees a young Buffer at the next scavenge, and scavenges come when JS
// objects fill the young generation; the relay path allocates so few that,
// under a body-heavy load, the Buffers' external memory reached V8's limit
// first, and that limit starts a full mark-compact (measured: one every
// ~70 ms at 1 MiB responses, 2.9 CPU s/GiB instead of 1.5). So every
// MINOR_GC_EVERY bytes relayed, a scavenge is asked for (~0.2 ms with the
// 1 MiB young generation the bin starts with). The bin runs node with
// --expose-gc for this (proxy/cli.ts, first line); without it this is a no-op.
// Counted where relayed bytes meet the upstream side (an exchange's response
// reads and request-body writes, the byte pipes of tcp mode and WebSocket
// tunnels): every path passes there, whatever the client-side record layer.

/** Relayed bytes between two scavenges we ask for (8 MiB: below the 1 MiB responses x 8 connections in flight). */
export const MINOR_GC_EVERY = 8 * 1024 * 1024;

type Gc = (options: { type: 'minor' | 'major' }) => void;

const gc: Gc | undefined = typeof (globalThis as { gc?: unknown }).gc === 'function' ? ((globalThis as { gc: Gc }).gc) : undefined;
let since = 0;

/** Count `bytes` relayed (either direction); a scavenge when MINOR_GC_EVERY have passed since the last. */
export function relayed(bytes: number): void {
  since += bytes;
  if (since < MINOR_GC_EVERY || !gc) return;
  since = 0;
  gc({ type: 'minor' });
}

/** Count every chunk `stream` emits (a side of a byte pipe: tcp mode, WebSocket tunnels). */
export function countRelayed(stream: { on(event: 'data', listener: (chunk: Buffer) => void): unknown }): void {
  stream.on('data', (chunk: Buffer) => relayed(chunk.length));
}
