// bench/lib/perf.ts: what bench/kernel-profile.ts reads from `perf stat -x,` and `perf script` (its text shapes as
// perf 6.1 prints them in the lab).
import t from 'tap';
import { parseStat, profileOf, top } from '../../bench/lib/perf.js';

t.test('parseStat: counts by syscall, the raw total kept under its event name, comments and <not counted> skipped', (t) => {
  const m = parseStat([
    '# started on Fri Dec  4 23:10:53 2026',
    '',
    '7673,,raw_syscalls:sys_enter,5119044576,100.00,,',
    '2714,,syscalls:sys_enter_epoll_pwait,5310274894,100.00,,',
    '686,,syscalls:sys_enter_recvmsg,5308626901,100.00,,',
    '<not counted>,,syscalls:sys_enter_splice,0,0.00,,',
  ].join('\n'));
  t.strictSame([...m], [['raw_syscalls:sys_enter', 7673], ['epoll_pwait', 2714], ['recvmsg', 686]]);
  t.end();
});

/** One `perf script -F comm,tid,ip,sym,dso` sample: the thread, then its frames, leaf first. */
const sample = (comm: string, frames: Array<[string, string]>): string =>
  `${comm}   170 \n${frames.map(([sym, dso], i) => `\tffffffff8100${i.toString(16).padStart(4, '0')} ${sym} (${dso})`).join('\n')}\n`;
const K = '[kernel.kallsyms]';
const entry: Array<[string, string]> = [['x64_sys_call', K], ['do_syscall_64', K], ['entry_SYSCALL_64_after_hwframe', K], ['__libc_recvmsg', '/usr/lib/x86_64-linux-gnu/libc.so.6']];

t.test('profileOf: the main thread\'s kernel samples by the syscall under x64_sys_call, modules counted as kernel', (t) => {
  const script = [
    // recvmsg twice: once in the tls module's decrypt, once in page allocation under it.
    sample('MainThread', [['gcm_decrypt_aesni_avx', '[aesni_intel]'], ['[unknown]', '[tls]'], ['sock_recvmsg', K], ['__sys_recvmsg', K], ['__x64_sys_recvmsg', K], ...entry]),
    sample('MainThread', [['clear_highpages_kasan_tagged', K], ['alloc_skb_with_frags', K], ['[unknown]', '[tls]'], ['sock_recvmsg', K], ['__x64_sys_recvmsg', K], ...entry]),
    // write through ksys_write (the dispatcher inlines __x64_sys_write).
    sample('MainThread', [['tcp_sendmsg_locked', K], ['vfs_write', K], ['ksys_write', K], ['x64_sys_call', K], ['do_syscall_64', K]]),
    // an interrupt in user code: no syscall frame.
    sample('MainThread', [['_raw_spin_unlock_irqrestore', K], ['hrtimer_interrupt', K], ['asm_sysvec_apic_timer_interrupt', K], ['Builtins_LoadIC', '/work/main/node_modules/node/bin/node']]),
    // user samples: JIT code, the vDSO, an unresolved frame.
    sample('MainThread', [['LazyCompile:~send', '/tmp/perf-170.map']]),
    sample('MainThread', [['__vdso_clock_gettime', '[vdso]']]),
    sample('MainThread', [['[unknown]', '[unknown]']]),
    // other threads: counted by thread, never in the main thread's table.
    sample('V8Worker', [['futex_wait', K], ['__x64_sys_futex', K], ...entry]),
    sample('swapper', [['pv_native_safe_halt', K], ['default_idle', K]]),
  ].join('\n');
  const p = profileOf(script);
  t.strictSame(Object.fromEntries(p.bySyscall), { recvmsg: 2, write: 1, '(asm_sysvec_apic_timer_interrupt)': 1 });
  const rx = p.inclusive.get('recvmsg')!;
  t.equal(rx.get('sock_recvmsg'), 2, 'inclusive: on both stacks');
  t.equal(rx.get('[unknown]'), 2, 'the tls module frame, once per sample');
  t.equal(rx.get('alloc_skb_with_frags'), 1);
  t.equal(rx.get('x64_sys_call'), undefined, 'the entry path is not part of a syscall');
  t.equal(rx.get('__x64_sys_recvmsg'), undefined, 'nor the syscall\'s own name');
  t.strictSame(Object.fromEntries(p.threadUs), { 'MainThread kernel': 4, 'MainThread user': 3, 'V8Worker kernel': 1, 'swapper kernel': 1 });
  t.strictSame(top(p.bySyscall, 1), [['recvmsg', 2]]);
  t.end();
});
