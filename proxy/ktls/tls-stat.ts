// /proc/net/tls_stat: the kernel TLS counters ("TlsTxSw 3" lines). Which counters exist
// depends on the kernel (6.1 has 12, 6.14+ adds the rekey ones), so every line is kept,
// whatever its name, instead of a fixed list.
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';

export const TLS_STAT_PATH = '/proc/net/tls_stat';

/** Counter name → value, in file order. */
export type TlsStat = Record<string, number>;

/** Parses the file's text. Lines that are not `<Name> <non-negative integer>` are skipped. */
export function parseTlsStat(text: string): TlsStat {
  const out: TlsStat = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z][A-Za-z0-9_]*)\s+(\d+)\s*$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) out[m[1]] = Number(m[2]);
  }
  return out;
}

/**
 * Reads the counters (of this network namespace). null when the file does not exist:
 * the tls module is not loaded, or the kernel has no CONFIG_TLS.
 */
export function readTlsStat(path: string = TLS_STAT_PATH): Promise<TlsStat | null> {
  return readFile(path, 'utf8').then(parseTlsStat, () => null);
}

/** Synchronous variant, for a metrics collect() callback that must not await a slow disk. */
export function readTlsStatSync(path: string = TLS_STAT_PATH): TlsStat | null {
  try {
    return parseTlsStat(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}
