// A measured figure, not a bound: the sidecar's own CPU (utime+stime from
// /proc) for 16 MiB HTTP/1.1 downloads on one keep-alive connection, TLS 1.3
// AES-128-GCM txrx, with ktls.splice on (bodies spliced) and off (through
// JS). One run of 4 downloads each after one warm-up, printed as a FIGURE
// comment; the bodies are sha256-checked and must be spliced (on) or not (off).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { probeKernel } from '../../proxy/ktls/probe.js';
import { SUITES, labSkip } from './helpers/sidecar-lab.js';
import { Client, T, fetchChecked, startHttpSidecar, startOrigin, tlsOptions } from './sidecar-http-splice-lab.js';

const MIB = 1024 * 1024;

/** utime+stime of a process, in ms (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

t.test('CPU of 16 MiB downloads, splice on vs off', { skip: labSkip }, async (t) => {
  const probe = await probeKernel({ skipNicOffload: true });
  t.ok(probe.supports('TLSv1.3', 'AES_GCM_128', 'tx'), 'kernel holds TLS 1.3 AES-128-GCM');
  const origin = await startOrigin(t);
  const figures: string[] = [];
  const n = 4;
  for (const splice of [true, false]) {
    const sc = await startHttpSidecar(t, origin, { direction: 'txrx', splice, spliceMinBody: T });
    const c = await Client.connect(sc.tlsPort, tlsOptions(SUITES[0]!));
    await fetchChecked(t, sc, c, 'GET', `/bytes/${16 * MIB}`, 16 * MIB); // warm-up
    const pid = sc.proc.pid!;
    const cpu0 = cpuMs(pid);
    const t0 = performance.now();
    let spliced = 0;
    for (let i = 0; i < n; i++) spliced += await fetchChecked(t, sc, c, 'GET', `/bytes/${16 * MIB}`, 16 * MIB);
    const cpu = cpuMs(pid) - cpu0;
    if (splice) t.ok(spliced >= n * (16 * MIB - 256 * 1024), `spliced ${spliced} B`);
    else t.equal(spliced, 0, 'nothing spliced');
    figures.push(`splice ${splice ? 'on' : 'off'}: ${cpu} ms CPU for ${n}x16 MiB = ${Math.round((cpu / (n * 16)) * 1024)} ms/GiB (wall ${Math.round(performance.now() - t0)} ms)`);
    c.destroy();
    await sc.stop();
  }
  t.comment(`FIGURE http splice, 16 MiB, TLS 1.3 AES-128-GCM txrx, one run: ${figures.join('; ')}`);
});
