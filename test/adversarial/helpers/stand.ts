// The stand most adversarial groups attack: test/helpers/stand.ts with the
// strict recording upstream. The resource baseline is taken before the first
// case; the group registers the closing check (resources.ts) after its last.
import type { Test } from 'tap';
import type { RunningSidecar } from '../../helpers/sidecar.js';
import { startStand } from '../../helpers/stand.js';
import { type RecordingUpstream, startRecordingUpstream } from './recording-upstream.js';
import { checkRecovered, type Usage, warmBaseline } from './resources.js';

export interface AttackStand {
  up: RecordingUpstream;
  sc: RunningSidecar;
  /** CA file the clients trust. */
  ca: string;
  /** Register checkRecovered against the baseline (call after the group's cases). */
  checkRecovered: (settleMs?: number) => void;
}

/** `args`: the group's own flags, after the certificate and upstream ones. */
export async function startAttackStand(t: Test, args: string[] = []): Promise<AttackStand> {
  const { pki, up, sc } = await startStand(t, startRecordingUpstream, args);
  const ca = pki.caCert;
  let base: Usage | undefined;
  t.before(async () => {
    base = await warmBaseline(sc, ca, up);
  });
  return { up, sc, ca, checkRecovered: (settleMs) => checkRecovered(t, sc, () => base as Usage, ca, { up, settleMs }) };
}
