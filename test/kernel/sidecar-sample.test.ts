// The real sidecar with `ktls.sampleRate: 0.5`: of 40 fresh connections,
// between 25 % and 75 % land on kTLS (the rest `sampled_out`). The bounds are
// wide on purpose (Binomial(40, 0.5) leaves them with p ≈ 0.002).
import t from 'tap';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { labPki, labSkip, startHttpLabSidecar } from './helpers/sidecar-lab.js';

const CONNECTIONS = 40;

function getFresh(port: number, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: '/', servername: 'localhost', ca, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('sampleRate 0.5', { skip: labSkip }, async (t) => {
  const sc = await startHttpLabSidecar(t, { enabled: true, sampleRate: 0.5 });
  const ca = readFileSync(labPki().caCert);
  const statuses: number[] = [];
  // 4 at a time: faster under emulation, and the draw is per connection anyway.
  for (let i = 0; i < CONNECTIONS; i += 4) {
    statuses.push(...(await Promise.all(Array.from({ length: Math.min(4, CONNECTIONS - i) }, () => getFresh(sc.tlsPort, ca)))));
  }
  t.same(statuses, new Array<number>(CONNECTIONS).fill(200), 'every request answered');
  const on = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'on' });
  const sampledOut = await sc.metric('ktls_sidecar_connections_opened_total', { ktls: 'off', ktls_reason: 'sampled_out' });
  t.equal(on + sampledOut, CONNECTIONS, 'every connection either on kTLS or sampled out');
  const share = on / CONNECTIONS;
  t.comment(`observed kTLS share ${(share * 100).toFixed(1)} % (${on}/${CONNECTIONS})`);
  t.ok(share >= 0.25 && share <= 0.75, `share ${share} within [0.25, 0.75]`);
});
