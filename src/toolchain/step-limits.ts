import { lstat, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { type ProcStat, readProcStat } from '../proc-stat.js';
import type { StepCgroup } from './cgroups.js';
import { type ProcessOutput, runProcess, type SpawnFailure } from './spawner.js';

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
  unreadable: (l: StepLimits) =>
    `The build made part of its workspace unreadable, so its size could not be held to ${l.workspaceMb} MB (BUILD_MAX_WORKSPACE_MB), and it was stopped.`,
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
  const held = heldDeletedFiles();

  const check = async (withDisk: boolean) => {
    // One look at the step's processes serves the limits a cgroup does not count and the disk's held files.
    const root = options.rootPid?.();
    const tree = root !== undefined && (withDisk || !options.cgroup) ? await processTree(root) : undefined;
    const found = (await treeLimit(options, tree)) ?? (withDisk ? await diskLimit(options, tree, held) : undefined);
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

async function treeLimit({ cgroup, limits }: LimitWatchOptions, tree: ProcessTree | undefined): Promise<string | undefined> {
  if (cgroup) {
    const hit = await cgroup.exceeded();
    return hit ? limitMessages[hit](limits) : undefined;
  }
  if (!tree) return undefined;
  let tasks = 0;
  let pages = 0;
  for (const stat of tree.values()) {
    tasks += stat.threads;
    pages += stat.rssPages;
  }
  if (tasks >= limits.maxProcesses) return limitMessages.processes(limits);
  if (pages * 4096 > limits.memoryMb * 1024 * 1024) return limitMessages.memory(limits);
  return undefined;
}

/**
 * The workspace counts as the larger of its bytes and one block per file and folder: empty
 * files take no bytes, and a step making millions of them would use up the filesystem's
 * inodes under any byte limit.
 */
const MIN_BYTES_PER_INODE = 4096;

async function diskLimit({ diskPaths, limits }: LimitWatchOptions, tree: ProcessTree | undefined, held: HeldFiles): Promise<string | undefined> {
  const [use, heldUse] = await Promise.all([diskUse(diskPaths), tree ? held.look(tree, diskPaths) : undefined]);
  if (use === 'unreadable') return limitMessages.unreadable(limits);
  const bytes = use.bytes + (heldUse?.bytes ?? 0);
  const inodes = use.inodes + (heldUse?.inodes ?? 0);
  return Math.max(bytes, inodes * MIN_BYTES_PER_INODE) > limits.workspaceMb * 1024 * 1024 ? limitMessages.disk(limits) : undefined;
}

/**
 * How many descriptors and mappings one look reads, and how many at once. A step may hold
 * thousands of descriptors in each of hundreds of processes: one look at all of them kept
 * the server's event loop busy for most of a second, so each look reads a share, goes on
 * where the last one stopped, and lets the event loop run between batches.
 */
const HELD_LOOKS_PER_PASS = 8192;
const HELD_BATCH = 64;

/** A deleted file a step's process holds: its identity (device and inode) and the disk it takes. */
interface HeldFile {
  id: string;
  bytes: number;
}

export interface HeldFiles {
  /** The deleted files the processes of `tree` hold on the filesystems of `paths`, as far as the looks so far have seen. */
  look(tree: ReadonlyMap<number, unknown>, paths: string[]): Promise<DiskUse>;
}

/**
 * A file deleted while a process holds it open, or maps it, keeps its disk space, out of
 * du's sight: a step could fill the disk one such file at a time (each up to the per-file
 * limit) until its timeout. Counted from /proc: the open files (`fd/`) and mapped files
 * (`maps`, `map_files/`) of the step's processes that have no name left, on the filesystems
 * of `paths` (a private /tmp has its own size limit). Each look reads at most
 * HELD_LOOKS_PER_PASS of them and remembers what it found; a descriptor the last looks did
 * not reach counts as it was when last read.
 */
export function heldDeletedFiles(perPass = HELD_LOOKS_PER_PASS): HeldFiles {
  /** By pid, then by `fd/<n>` or `map/<device>:<inode>`: what the last read of each found. */
  const found = new Map<number, Map<string, HeldFile>>();
  /** Where the next look starts: a pid and how many of its descriptors were read already. */
  let cursor = { pid: 0, fdsRead: 0 };

  const look = async (tree: ReadonlyMap<number, unknown>, paths: string[]): Promise<DiskUse> => {
    const devices = new Set((await Promise.all(paths.map((path) => stat(path).catch(() => undefined)))).flatMap((s) => (s ? [s.dev] : [])));
    for (const pid of found.keys()) if (!tree.has(pid)) found.delete(pid);
    const pids = [...tree.keys()].sort((a, b) => a - b);
    const first = Math.max(0, pids.findIndex((pid) => pid >= cursor.pid));
    let budget = perPass;
    for (let step = 0; step < pids.length && budget > 0; step++) {
      const pid = pids[(first + step) % pids.length]!;
      const fdsRead = pid === cursor.pid ? cursor.fdsRead : 0;
      const own = found.get(pid) ?? new Map<string, HeldFile>();
      found.set(pid, own);
      if (fdsRead === 0) {
        budget -= await readMaps(pid, devices, own);
      }
      const fds = (await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])).sort((a, b) => Number(a) - Number(b));
      const share = fds.slice(fdsRead, fdsRead + Math.max(budget, 0));
      budget -= share.length;
      for (let at = 0; at < share.length; at += HELD_BATCH) {
        const batch = share.slice(at, at + HELD_BATCH);
        const files = await Promise.all(batch.map((fd) => stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined)));
        batch.forEach((fd, index) => {
          const file = files[index];
          if (file?.isFile() && file.nlink === 0 && devices.has(file.dev)) own.set(`fd/${fd}`, { id: `${file.dev}:${file.ino}`, bytes: file.blocks * 512 });
          else own.delete(`fd/${fd}`);
        });
        await yieldToLoop();
      }
      if (fdsRead + share.length < fds.length) {
        cursor = { pid, fdsRead: fdsRead + share.length };
        break;
      }
      // The whole list read: descriptors closed since then hold nothing.
      const open = new Set(fds.map((fd) => `fd/${fd}`));
      for (const key of own.keys()) if (key.startsWith('fd/') && !open.has(key)) own.delete(key);
      cursor = { pid: pids[(first + step + 1) % pids.length]!, fdsRead: 0 };
    }
    const counted = new Map<string, number>();
    for (const own of found.values()) for (const { id, bytes } of own.values()) counted.set(id, Math.max(bytes, counted.get(id) ?? 0));
    let bytes = 0;
    for (const size of counted.values()) bytes += size;
    return { bytes, inodes: counted.size };
  };
  return { look };
}

/**
 * The deleted files `pid` maps (on `devices`), into `own` in place of those found before;
 * returns how many reads it took. Their size comes from `map_files/` where the server may
 * read it (CAP_SYS_ADMIN), else it counts what the mapping covers, all that `maps` tells.
 */
async function readMaps(pid: number, devices: ReadonlySet<number>, own: Map<string, HeldFile>): Promise<number> {
  for (const key of own.keys()) if (key.startsWith('map/')) own.delete(key);
  const text = await readFile(`/proc/${pid}/maps`, 'utf8').catch(() => '');
  let reads = 1;
  for (const line of text.split('\n')) {
    // start-end perms offset major:minor inode path, the path ending " (deleted)" once unlinked.
    const match = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+) +\/.* \(deleted\)$/.exec(line);
    if (!match) continue;
    const [, start, end, offset, major, minor, inode] = match;
    const dev = encodeDevice(parseInt(major!, 16), parseInt(minor!, 16));
    if (!devices.has(dev) || own.has(`map/${dev}:${inode}`)) continue;
    reads++;
    const file = await stat(`/proc/${pid}/map_files/${start}-${end}`).catch(() => undefined);
    const bytes = file ? file.blocks * 512 : parseInt(offset!, 16) + (parseInt(end!, 16) - parseInt(start!, 16));
    own.set(`map/${dev}:${inode}`, { id: `${dev}:${inode}`, bytes });
  }
  return reads;
}

/** st_dev as Linux encodes it (new_encode_dev) from a device's major and minor numbers. */
function encodeDevice(major: number, minor: number): number {
  return (minor & 0xff) + major * 256 + Math.floor(minor / 256) * 2 ** 20;
}

/** A step's processes (by pid) with what /proc says of each. */
type ProcessTree = Map<number, ProcStat>;

/** `root` and every descendant. */
async function processTree(root: number): Promise<ProcessTree> {
  const entries = await readdir('/proc').catch(() => [] as string[]);
  const children = new Map<number, number[]>();
  const stats = new Map<number, ProcStat>();
  // Read at once: a fork bomb makes thousands, and the watch must keep up with it.
  const read = await Promise.all(entries.filter((entry) => /^\d+$/.test(entry)).map(async (entry) => [Number(entry), await readProcStat(Number(entry))] as const));
  for (const [pid, stat] of read) {
    if (!stat) continue;
    stats.set(pid, stat);
    children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), pid]);
  }
  const tree = new Map<number, ProcStat>();
  const queue = [root];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    const stat = stats.get(pid);
    if (stat) tree.set(pid, stat);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

interface DiskUse {
  bytes: number;
  inodes: number;
}

/**
 * What du's total means. The step's code owns its workspace: a folder it takes its owner's
 * rights from (`chmod 300`) hides what it writes there from a server that is not root, and
 * du then prints the total of the rest. So a du that could not read part of the tree never
 * passes the limit.
 */
export type DuReading = { total: number } | 'unreadable' | undefined;

// Files that vanished during the walk (npm and pub delete temporary files all the time): gone, so rightly not counted.
const VANISHED = /: (No such file or directory|Not a directory)$/;

/**
 * Reads `du -s` of `pathCount` folders: their total; 'unreadable' when du could not read part
 * of them; undefined when there is no du to tell (not coreutils, or it could not start).
 */
export function readDuOutput(output: ProcessOutput | SpawnFailure, pathCount: number): DuReading {
  if (!('exitCode' in output) || output.timedOut) return undefined;
  const totals = output.stdout.split('\n').filter(Boolean).map((line) => Number(line.split('\t')[0]));
  if (totals.length !== pathCount || !totals.every(Number.isFinite)) return undefined;
  const total = { total: totals.reduce((sum, n) => sum + n, 0) };
  if (output.exitCode === 0) return total;
  const complaints = output.stderr.split('\n').filter(Boolean);
  // Ended badly without a word (a signal): the walk in Node measures instead.
  if (complaints.length === 0) return undefined;
  // Any other complaint (Permission denied above all) left part of the tree unmeasured.
  return complaints.every((line) => VANISHED.test(line)) ? total : 'unreadable';
}

/**
 * Bytes allocated on disk under `paths` (sparse files count what they use) and the files
 * and folders there, symlinks not followed: coreutils' du walks a node_modules several
 * times faster than a walk in Node (the two runs share the kernel's cache of the tree).
 */
async function diskUse(paths: string[]): Promise<DiskUse | 'unreadable'> {
  const [bytes, inodes] = await Promise.all([duTotal(['-B1'], paths), duTotal(['--inodes'], paths)]);
  if (bytes === 'unreadable' || inodes === 'unreadable') return 'unreadable';
  if (bytes !== undefined && inodes !== undefined) return { bytes: bytes.total, inodes: inodes.total };
  const use: DiskUse = { bytes: 0, inodes: 0 };
  for (const path of paths) if ((await walkDiskUse(path, use)) === 'unreadable') return 'unreadable';
  return use;
}

/** What `du -s -x` counts under `paths` in all. */
async function duTotal(unit: string[], paths: string[]): Promise<DuReading> {
  // LC_ALL=C: du's complaints are read, so they must be in English.
  const result = await runProcess({ command: 'du', args: ['-s', '-x', ...unit, '--', ...paths], env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } }, 60_000);
  return readDuOutput(result, paths.length);
}

async function walkDiskUse(path: string, use: DiskUse): Promise<'unreadable' | undefined> {
  const stats = await lstat(path).catch(vanishedOrUnreadable);
  if (stats === undefined || stats === 'unreadable') return stats;
  use.bytes += stats.blocks * 512;
  use.inodes++;
  if (!stats.isDirectory()) return undefined;
  const entries = await readdir(path).catch(vanishedOrUnreadable);
  if (entries === 'unreadable') return entries;
  for (const entry of entries ?? []) if ((await walkDiskUse(join(path, entry), use)) === 'unreadable') return 'unreadable';
  return undefined;
}

/** As in du: a file that vanished is not counted; one that could not be read fails the measure. */
function vanishedOrUnreadable(error: unknown): 'unreadable' | undefined {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' ? undefined : 'unreadable';
}
