// The fixture most forwarding tests start from: a throwaway PKI, an upstream
// (the test's own kind), and one sidecar child serving the PKI's server
// certificate and forwarding to that upstream; all torn down with the file.
import { makePki, type Pki } from './pki.js';
import { type RunningSidecar, startSidecar } from './sidecar.js';
import type { Teardown } from './teardown.js';

export interface Stand<U> {
  pki: Pki;
  up: U;
  sc: RunningSidecar;
}

/** `args`: the test's own flags, after the certificate and upstream ones. */
export async function startStand<U extends { url: string; close(): Promise<void> }>(
  t: Teardown,
  startUpstream: () => Promise<U>,
  args: string[] = [],
): Promise<Stand<U>> {
  const pki = makePki();
  t.teardown(() => pki.cleanup());
  const up = await startUpstream();
  t.teardown(() => up.close());
  const sc = await startSidecar(['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--upstream-url', up.url, ...args]);
  t.teardown(() => sc.stop());
  return { pki, up, sc };
}
