// Each closed set is defined once, in proxy/vocabulary.ts, and the decision,
// the metrics and the docs read that one list (docs: test/unit/metrics-docs.test.ts).
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v from '../../proxy/vocabulary.js';
import { DECISION_REASONS } from '../../proxy/ktls/decision.js';
import { createMetrics } from '../../proxy/admin/metrics.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

t.test('the decision gives only reasons of the one list', (t) => {
  for (const r of DECISION_REASONS) t.ok((v.KTLS_REASONS as readonly string[]).includes(r), r);
  // The three it cannot give are produced elsewhere (engine hand-off, pre-decision, catch-all).
  t.same(
    v.KTLS_REASONS.filter((r) => !(DECISION_REASONS as readonly string[]).includes(r)),
    ['handoff_failed', 'not_attempted', 'other'],
  );
  t.end();
});

t.test('the metrics keep every value of the lists and fold anything else into other', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  const base = { ktls: 'off', tls_version: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', direction: 'none', protocol: 'http1' } as const;
  for (const r of v.KTLS_REASONS) m.connectionOpened({ ...base, ktls_reason: r }, { bytesIn: 0, bytesOut: 0 }).close('client_close');
  for (const r of v.CLOSE_REASONS) m.connectionOpened({ ...base, ktls_reason: 'flag_off' }, { bytesIn: 0, bytesOut: 0 }).close(r);
  for (const r of v.REJECT_REASONS) m.connectionRejected(r);
  for (const r of v.HANDSHAKE_FAILURE_REASONS) m.handshakeFailed(r);
  for (const r of v.UPSTREAM_ERROR_REASONS) m.upstreamError(r);
  for (const s of v.KTLS_STAGES) m.ktlsError('EBADMSG', s);
  m.connectionRejected('made_up' as v.RejectReason);
  const text = await m.registry.metrics();
  const values = (metric: string, label: string): Set<string> =>
    new Set([...text.matchAll(new RegExp(`^ktls_sidecar_${metric}\\{[^}]*\\b${label}="([^"]+)"`, 'gm'))].map((x) => x[1] ?? ''));
  t.same([...values('connections_opened_total', 'ktls_reason')].sort(), [...v.KTLS_REASONS].sort());
  t.same([...values('connections_closed_total', 'reason')].sort(), [...v.CLOSE_REASONS].sort());
  t.same([...values('connections_rejected_total', 'reason')].sort(), [...v.REJECT_REASONS].sort());
  t.same([...values('handshake_failures_total', 'reason')].sort(), [...v.HANDSHAKE_FAILURE_REASONS].sort());
  t.same([...values('upstream_errors_total', 'reason')].sort(), [...v.UPSTREAM_ERROR_REASONS].sort());
  t.same([...values('ktls_errors_total', 'stage')].sort(), [...v.KTLS_STAGES].sort());
  t.end();
});

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const rel = `${dir}/${name}`;
    if (statSync(join(root, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

t.test('no module re-declares a closed set (or most of one) as a list of its own', (t) => {
  const sets: [string, readonly string[]][] = [];
  for (const [name, value] of Object.entries(v)) if (Array.isArray(value)) sets.push([name, value as readonly string[]]);
  for (const file of sources('proxy')) {
    if (file === 'proxy/vocabulary.ts') continue;
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(/\[\s*('[a-z0-9_.]+'\s*,\s*){2,}'[a-z0-9_.]+'\s*,?\s*\]/gi)) {
      const members = [...m[0].matchAll(/'([^']+)'/g)].map((x) => x[1] ?? '');
      for (const [name, set] of sets) {
        // A short subset that classifies (e.g. the read stages) is fine; a copy of most of a set drifts.
        const copy = members.length >= Math.max(5, set.length / 2) && members.every((x) => set.includes(x));
        t.notOk(copy, `${file}: [${members.join(', ')}] copies ${name}`);
      }
    }
  }
  t.end();
});
