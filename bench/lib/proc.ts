// CPU time of a process tree from /proc: what a proxy under test spent, whatever its process model (nginx master
// + worker, the sidecar's primary + workers, one Node process).
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Stat { ppid: number; user: number; sys: number; childUser: number; childSys: number }

function statOf(path: string): Stat | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch { return null; } // exited meanwhile
  // The command name may contain spaces and parentheses: split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK, childUser: Number(f[13]) / CLK_TCK, childSys: Number(f[14]) / CLK_TCK };
}

/** The pid and all its descendants, found by parent pid over /proc (works without CONFIG_PROC_CHILDREN). */
export function treeOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = statOf(`/proc/${name}/stat`);
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(Number(name));
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

export interface TreeCpu { user: number; sys: number; pids: number[] }

/**
 * utime/stime of every process in the tree, plus the cutime/cstime each has collected from children it reaped
 * (a worker that exits inside the window still counts, through its parent).
 */
export function treeCpu(root: number): TreeCpu {
  const pids = treeOf(root);
  let user = 0;
  let sys = 0;
  for (const pid of pids) {
    const s = statOf(`/proc/${pid}/stat`);
    if (!s) continue;
    user += s.user + s.childUser;
    sys += s.sys + s.childSys;
  }
  return { user, sys, pids };
}

export type ThreadCpu = Map<string, { user: number; sys: number }>;

/**
 * CPU seconds by thread name over the tree (user, system), from /proc/<pid>/task/<tid>/stat. Names are
 * prefixed `root/` for the tree's first process and `child/` for the others (nginx master vs worker, the
 * sidecar's primary vs its workers), so a process that should idle shows on its own.
 */
export function threadCpuOf(root: number): ThreadCpu {
  const out: ThreadCpu = new Map();
  for (const pid of treeOf(root)) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch { continue; }
    for (const tid of tids) {
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      } catch { continue; } // the thread exited
      const thread = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')).replace(/\d+$/, '#').replace(/\s+/g, '_');
      const name = `${pid === root ? 'root' : 'child'}/${thread}`;
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      const e = out.get(name) ?? { user: 0, sys: 0 };
      e.user += Number(f[11]) / CLK_TCK;
      e.sys += Number(f[12]) / CLK_TCK;
      out.set(name, e);
    }
  }
  return out;
}

/** "name:1.20u+0.30s,…" for the threads that used CPU between the two snapshots. */
export function threadCpuDelta(before: ThreadCpu, after: ThreadCpu): string {
  const parts: string[] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { user: 0, sys: 0 };
    const du = a.user - b.user;
    const ds = a.sys - b.sys;
    if (du + ds > 0) parts.push(`${name}:${du.toFixed(2)}u+${ds.toFixed(2)}s`);
  }
  return parts.join(',');
}

/**
 * The share of a process tree's CPU that V8's compiler threads (named `V8Worker`) used between two threadCpuOf()
 * snapshots; 0 when the tree used none. BENCH_FRESH warms a process until this is small.
 */
export function compilerShare(before: ThreadCpu, after: ThreadCpu): number {
  let all = 0;
  let compiler = 0;
  for (const [name, a] of after) {
    const b = before.get(name) ?? { user: 0, sys: 0 };
    const d = a.user + a.sys - b.user - b.sys;
    all += d;
    if (name.endsWith('/V8Worker')) compiler += d;
  }
  return all > 0 ? compiler / all : 0;
}

/** Counters of /proc/net/tls_stat (empty when the kernel has no TLS module loaded). */
export function tlsStat(): Map<string, number> {
  const out = new Map<string, number>();
  let text: string;
  try {
    text = readFileSync('/proc/net/tls_stat', 'utf8');
  } catch { return out; }
  for (const line of text.split('\n')) {
    const m = /^(\w+)\s+(\d+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}
