import { randomUUID } from 'node:crypto';
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

// Control groups bound a whole process tree (threads and a forking daemon included),
// which per-process rlimits cannot: the kernel refuses the fork past `pids.max` and
// OOM-kills inside the group past its memory limit. They need a writable hierarchy
// (root, or a delegated subtree); `findCgroups` says whether this machine has one.

const ROOT = '/sys/fs/cgroup';

export type CgroupLayout =
  | { version: 2; base: string }
  | { version: 1; pidsBase: string; memoryBase: string };

export interface StepCgroup {
  /** The `cgroup.procs` files a process writes its pid into to join. */
  procsFiles: string[];
  /** Which limit the kernel enforced so far, if any. */
  exceeded(): Promise<'processes' | 'memory' | undefined>;
  /** Removes the group once its processes are gone. */
  remove(): Promise<void>;
}

/** Where this process may create child groups with pids and memory limits, if anywhere. */
export async function findCgroups(): Promise<CgroupLayout | undefined> {
  const own = await readFile('/proc/self/cgroup', 'utf8').catch(() => '');
  const pathOf = (controller: string) => own.match(new RegExp(`^\\d+:${controller}:(.*)$`, 'm'))?.[1];
  const candidates: CgroupLayout[] = [];
  const unified = pathOf('');
  if (unified !== undefined && (await exists(join(ROOT, 'cgroup.controllers')))) {
    candidates.push({ version: 2, base: join(ROOT, unified) });
  }
  const pids = pathOf('pids');
  const memory = pathOf('memory');
  if (pids !== undefined && memory !== undefined) {
    candidates.push({ version: 1, pidsBase: join(ROOT, 'pids', pids), memoryBase: join(ROOT, 'memory', memory) });
  }
  for (const layout of candidates) {
    const probe = await createStepCgroup(layout, { maxProcesses: 64, memoryBytes: 64 * 1024 * 1024 }).catch(() => undefined);
    if (!probe) continue;
    await probe.remove();
    return layout;
  }
  return undefined;
}

export async function createStepCgroup(
  layout: CgroupLayout,
  limits: { maxProcesses: number; memoryBytes: number },
): Promise<StepCgroup> {
  const name = `kiln-build-${randomUUID()}`;
  const dirs = layout.version === 2 ? [join(layout.base, name)] : [join(layout.pidsBase, name), join(layout.memoryBase, name)];
  const [pidsDir, memoryDir] = layout.version === 2 ? [dirs[0]!, dirs[0]!] : [dirs[0]!, dirs[1]!];
  const created: string[] = [];
  // v1's controllers are folders of their own: each is made, limited and removed alongside the other.
  const remove = async () => {
    await Promise.all(created.map(removeWhenEmpty));
  };
  const memoryLimits = async () => {
    if (layout.version === 2) {
      await writeFile(join(memoryDir, 'memory.max'), String(limits.memoryBytes));
      await writeFile(join(memoryDir, 'memory.swap.max'), '0').catch(() => undefined);
    } else {
      await writeFile(join(memoryDir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // Without it the group could swap past its limit (absent when swap accounting is off).
      await writeFile(join(memoryDir, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes)).catch(() => undefined);
    }
  };
  try {
    // Settled, not raced: a folder made while the other failed is removed too.
    await allOrFirstError(
      dirs.map(async (dir) => {
        await mkdir(dir);
        created.push(dir);
      }),
    );
    await allOrFirstError([writeFile(join(pidsDir, 'pids.max'), String(limits.maxProcesses)), memoryLimits()]);
  } catch (error) {
    await remove();
    throw error;
  }
  const oomFile = layout.version === 2 ? join(memoryDir, 'memory.events') : join(memoryDir, 'memory.oom_control');
  return {
    procsFiles: dirs.map((dir) => join(dir, 'cgroup.procs')),
    exceeded: async () => {
      if ((await counter(join(pidsDir, 'pids.events'), 'max')) > 0) return 'processes';
      if ((await counter(oomFile, 'oom_kill')) > 0) return 'memory';
      return undefined;
    },
    remove,
  };
}

/** Waits for every one of `work`, then throws the first failure, if any. */
async function allOrFirstError(work: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((result) => result.status === 'rejected');
  if (failed) throw failed.reason;
}

/** `name N` from a flat-keyed cgroup file; 0 when absent. */
async function counter(file: string, name: string): Promise<number> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return Number(text.match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1] ?? 0);
}

// A group is removable only once its last process is reaped, a moment after it exits.
async function removeWhenEmpty(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw error;
      await delay(2);
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
