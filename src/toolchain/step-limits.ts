import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readProcStat } from '../proc-stat.js';
import type { StepCgroup } from './cgroups.js';
import { runProcess } from './spawner.js';

export interface StepLimits {
  memoryMb: number;
  maxProcesses: number;
  workspaceMb: number;
  /** Size of the sandbox's private /tmp (and HOME in it). */
  tmpMb: number;
}

export interface LimitWatchOptions {
  limits: StepLimits;
  /** Enforced by the kernel; the watch only reads which limit was hit. */
  cgroup?: StepCgroup;
  /** Without a cgroup: the host pid of the sandbox's init, whose process tree is measured. */
  rootPid?: () => number | undefined;
  /** Folders whose disk use counts against `workspaceMb`. */
  diskPaths: string[];
  /** Called once, with the message for the build log, when a limit is passed. */
  onExceeded(message: string): void;
}

export interface LimitWatch {
  /** Stops watching after a last look; resolves with the message of a passed limit, if any. */
  stop(): Promise<string | undefined>;
}

const TICK_MS = 200;
// Walking a workspace with node_modules costs milliseconds, so the disk is checked less often.
const DISK_EVERY_TICKS = 5;

export const limitMessages = {
  processes: (l: StepLimits) => `The build reached its limit of ${l.maxProcesses} processes (BUILD_MAX_PROCESSES) and was stopped.`,
  memory: (l: StepLimits) => `The build used more than ${l.memoryMb} MB of memory (BUILD_MEMORY_MB) and was stopped.`,
  disk: (l: StepLimits) => `The build wrote more than ${l.workspaceMb} MB to its workspace (BUILD_MAX_WORKSPACE_MB) and was stopped.`,
};

/**
 * Polls a running step's processes, memory and disk use. The kernel enforces what it can
 * (cgroup, rlimits); this turns a hit limit into a clear message and ends the step, and
 * measures what no kernel limit covers here (a workspace's total size, a tree without cgroup).
 */
export function watchLimits(options: LimitWatchOptions): LimitWatch {
  let exceeded: string | undefined;
  let stopped = false;
  let ticks = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const check = async (withDisk: boolean) => {
    const found = (await treeLimit(options)) ?? (withDisk ? await diskLimit(options) : undefined);
    if (found && !exceeded) {
      exceeded = found;
      options.onExceeded(found);
    }
  };
  const schedule = () => {
    timer = setTimeout(() => {
      running = check(++ticks % DISK_EVERY_TICKS === 0).finally(() => {
        if (!stopped && !exceeded) schedule();
      });
    }, TICK_MS);
  };
  schedule();

  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
      if (!exceeded) await check(true);
      return exceeded;
    },
  };
}

async function treeLimit({ cgroup, rootPid, limits }: LimitWatchOptions): Promise<string | undefined> {
  if (cgroup) {
    const hit = await cgroup.exceeded();
    return hit ? limitMessages[hit](limits) : undefined;
  }
  const root = rootPid?.();
  if (root === undefined) return undefined;
  const { tasks, rssBytes } = await measureTree(root);
  if (tasks >= limits.maxProcesses) return limitMessages.processes(limits);
  if (rssBytes > limits.memoryMb * 1024 * 1024) return limitMessages.memory(limits);
  return undefined;
}

/**
 * The workspace counts as the larger of its bytes and one block per file and folder: empty
 * files take no bytes, and a step making millions of them would use up the filesystem's
 * inodes under any byte limit.
 */
const MIN_BYTES_PER_INODE = 4096;

async function diskLimit({ diskPaths, limits }: LimitWatchOptions): Promise<string | undefined> {
  const { bytes, inodes } = await diskUse(diskPaths);
  return Math.max(bytes, inodes * MIN_BYTES_PER_INODE) > limits.workspaceMb * 1024 * 1024 ? limitMessages.disk(limits) : undefined;
}

/** Threads and resident memory of `root` and every descendant, from /proc. */
async function measureTree(root: number): Promise<{ tasks: number; rssBytes: number }> {
  const entries = await readdir('/proc').catch(() => [] as string[]);
  const children = new Map<number, number[]>();
  const usage = new Map<number, { tasks: number; rss: number }>();
  // Read at once: a fork bomb makes thousands, and the watch must keep up with it.
  const stats = await Promise.all(entries.filter((entry) => /^\d+$/.test(entry)).map(async (entry) => [Number(entry), await readProcStat(Number(entry))] as const));
  for (const [pid, stat] of stats) {
    if (!stat) continue;
    usage.set(pid, { tasks: stat.threads, rss: stat.rssPages });
    children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), pid]);
  }
  let tasks = 0;
  let pages = 0;
  const queue = [root];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    const own = usage.get(pid);
    if (own) {
      tasks += own.tasks;
      pages += own.rss;
    }
    queue.push(...(children.get(pid) ?? []));
  }
  return { tasks, rssBytes: pages * 4096 };
}

interface DiskUse {
  bytes: number;
  inodes: number;
}

/**
 * Bytes allocated on disk under `paths` (sparse files count what they use) and the files
 * and folders there, symlinks not followed: coreutils' du walks a node_modules several
 * times faster than a walk in Node (the two runs share the kernel's cache of the tree).
 */
async function diskUse(paths: string[]): Promise<DiskUse> {
  const [bytes, inodes] = await Promise.all([duTotal(['-B1'], paths), duTotal(['--inodes'], paths)]);
  if (bytes !== undefined && inodes !== undefined) return { bytes, inodes };
  const use: DiskUse = { bytes: 0, inodes: 0 };
  for (const path of paths) await walkDiskUse(path, use);
  return use;
}

/** What `du -s -x` counts under `paths` in all; undefined when it could not tell (no coreutils du). */
async function duTotal(unit: string[], paths: string[]): Promise<number | undefined> {
  const result = await runProcess({ command: 'du', args: ['-s', '-x', ...unit, '--', ...paths], env: { PATH: '/usr/bin:/bin' } }, 60_000);
  const totals = ('stdout' in result ? result.stdout : '').split('\n').filter(Boolean).map((line) => Number(line.split('\t')[0]));
  return totals.length === paths.length && totals.every(Number.isFinite) ? totals.reduce((sum, n) => sum + n, 0) : undefined;
}

async function walkDiskUse(path: string, use: DiskUse): Promise<void> {
  const stats = await lstat(path).catch(() => undefined);
  if (!stats) return;
  use.bytes += stats.blocks * 512;
  use.inodes++;
  if (!stats.isDirectory()) return;
  const entries = await readdir(path).catch(() => [] as string[]);
  for (const entry of entries) await walkDiskUse(join(path, entry), use);
}
