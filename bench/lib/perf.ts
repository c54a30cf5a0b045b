// Parsers for bench/kernel-profile.ts: `perf stat -x,` counts and `perf script` call chains.

/** `perf stat -x,` output: syscall → count. */
export function parseStat(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const f = line.split(',');
    const name = f[2]?.replace('syscalls:sys_enter_', '');
    if (name && f[0] && /^\d+$/.test(f[0])) m.set(name, Number(f[0]));
  }
  return m;
}

export interface KernelProfile { bySyscall: Map<string, number>; inclusive: Map<string, Map<string, number>>; threadUs: Map<string, number> }

/** The kernel and its modules: [kernel.kallsyms], [tls], [aesni_intel]...; not [vdso] or [unknown]. */
const isKernel = (dso: string): boolean => /^\[(?!vdso\]|unknown\])[^\]]+\]$/.test(dso);

/**
 * `perf script` call chains → for the main thread's kernel samples, the syscall each was in (the frame under
 * x64_sys_call / do_syscall_64) or else its outermost kernel frame (interrupts, page faults); for each the kernel
 * functions on its samples' stacks (inclusive); and every thread's samples, user and kernel.
 */
export function profileOf(script: string): KernelProfile {
  const p: KernelProfile = { bySyscall: new Map(), inclusive: new Map(), threadUs: new Map() };
  const add = (m: Map<string, number>, k: string): void => {
    m.set(k, (m.get(k) ?? 0) + 1);
  };
  for (const block of script.split('\n\n')) {
    const lines = block.trim().split('\n');
    const comm = lines[0]?.trim().split(/\s+/)[0];
    if (!comm || lines.length < 2) continue;
    const frames = lines.slice(1).map((l) => /^\s*[0-9a-f]+\s+(\S+)\s+\((.*)\)/.exec(l)).map((m) => ({ sym: m?.[1] ?? '?', dso: m?.[2] ?? '?' }));
    const kernel = isKernel(frames[0]!.dso);
    add(p.threadUs, `${comm} ${kernel ? 'kernel' : 'user'}`);
    if (comm !== 'MainThread' || !kernel) continue;
    const at = frames.findIndex((f) => f.sym === 'x64_sys_call' || f.sym === 'do_syscall_64');
    // Not in a syscall (an interrupt, a page fault): keyed by the outermost kernel frame, in parentheses.
    const outer = frames.filter((f) => isKernel(f.dso)).pop()!;
    const key = at > 0 ? frames[at - 1]!.sym.replace(/^(__x64_sys_|__do_sys_|__sys_|ksys_)/, '') : `(${outer.sym})`;
    add(p.bySyscall, key);
    const inc = p.inclusive.get(key) ?? new Map<string, number>();
    for (const sym of new Set(frames.slice(0, at > 0 ? at - 1 : frames.length).filter((f) => isKernel(f.dso)).map((f) => f.sym))) add(inc, sym);
    p.inclusive.set(key, inc);
  }
  return p;
}

/** The `n` largest entries of `m`, largest first. */
export const top = <K>(m: Map<K, number>, n: number): [K, number][] => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
