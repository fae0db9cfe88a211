import { lstat, readdir, readFile, stat, statfs } from 'node:fs/promises';
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
  /**
   * Free space the workspace's filesystem keeps: below it, the step is stopped. A floor for
   * what the workspace's own limit cannot see (a deleted file whose descriptor only a socket's
   * queue holds), so the database and the other projects on that disk are never starved.
   */
  minFreeDiskMb?: number;
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
  /**
   * Stops watching after a last look; resolves with the message of a passed limit, if any.
   * `ended`: nothing of the step runs any more, so the look skips its processes (a read of all of /proc).
   */
  stop(ended: boolean): Promise<string | undefined>;
}

const TICK_MS = 200;
// Walking a workspace with node_modules costs milliseconds, so the disk is checked less often.
const DISK_EVERY_TICKS = 5;

export const limitMessages = {
  processes: (l: StepLimits) => `The build reached its limit of ${l.maxProcesses} processes (BUILD_MAX_PROCESSES) and was stopped.`,
  memory: (l: StepLimits) => `The build used more than ${l.memoryMb} MB of memory (BUILD_MEMORY_MB) and was stopped.`,
  disk: (l: StepLimits) => `The build wrote more than ${l.workspaceMb} MB to its workspace (BUILD_MAX_WORKSPACE_MB) and was stopped.`,
  diskFull: (l: StepLimits) => `The server's disk had less than ${l.minFreeDiskMb} MB free (BUILD_MIN_FREE_DISK_MB), so the build was stopped.`,
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

  const check = async (withDisk: boolean, ended = false) => {
    // One look at the step's processes serves the limits a cgroup does not count and the disk's held files.
    const root = ended ? undefined : options.rootPid?.();
    const tree = root !== undefined && (withDisk || !options.cgroup) ? await processTree(root) : undefined;
    const [treeFound, diskFound] = await Promise.all([treeLimit(options, tree), withDisk ? diskLimit(options, tree, held) : undefined]);
    const found = treeFound ?? diskFound;
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
    stop: async (ended) => {
      stopped = true;
      clearTimeout(timer);
      await running;
      if (!exceeded) await check(true, ended);
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
  const [use, heldUse, free] = await Promise.all([diskUse(diskPaths), tree ? held.look(tree, diskPaths) : undefined, freeBytes(diskPaths[0])]);
  if (free !== undefined && limits.minFreeDiskMb !== undefined && free < limits.minFreeDiskMb * 1024 * 1024) return limitMessages.diskFull(limits);
  if (use === 'unreadable') return limitMessages.unreadable(limits);
  const bytes = use.bytes + (heldUse?.bytes ?? 0);
  const inodes = use.inodes + (heldUse?.inodes ?? 0);
  return Math.max(bytes, inodes * MIN_BYTES_PER_INODE) > limits.workspaceMb * 1024 * 1024 ? limitMessages.disk(limits) : undefined;
}

/** What an unprivileged user may still write on the filesystem of `path`. */
async function freeBytes(path: string | undefined): Promise<number | undefined> {
  if (path === undefined) return undefined;
  const fs = await statfs(path).catch(() => undefined);
  return fs && fs.bavail * fs.bsize;
}

/**
 * How much one look reads, and how many descriptors at once. A step may hold thousands of
 * descriptors in each of hundreds of processes, or map tens of thousands of areas in each:
 * one look at all of them kept the server's event loop busy for most of a second, so each
 * look reads a share, goes on where the last one stopped, and lets the event loop run
 * between batches and between processes. A share is HELD_LOOKS_PER_PASS descriptors or
 * mapped files to stat, MAPS_LINES_PER_LOOK lines of `maps` counting as one.
 */
const HELD_LOOKS_PER_PASS = 8192;
const MAPS_LINES_PER_LOOK = 8;
const HELD_BATCH = 64;
const MAPS_LINES_BATCH = 1024;

/** A deleted file a step's process holds: its identity (device and inode) and the disk it takes. */
interface HeldFile {
  id: string;
  bytes: number;
}

export interface HeldFiles {
  /** The deleted files the processes of `tree` hold on the filesystems of `paths`, as far as the looks so far have seen. */
  look(tree: ReadonlyMap<number, Partial<Pick<ProcStat, 'state'>>>, paths: string[]): Promise<DiskUse>;
}

/** What the scan of one process found: by `fd/<n>` or `map/<device>:<inode>`, what the last read of each found. */
interface HeldByProcess {
  files: Map<string, HeldFile>;
  /** The mapped files the pass through `maps` under way has met. */
  mapsSeen: Set<string>;
}

/**
 * Where the next look starts: a pid, then its `maps` from the first area at or above `after`
 * (an address, in hex: areas are listed in address order, so one mapped or unmapped since
 * does not shift the place), then its descriptors from the `fdsRead`-th on.
 */
type HeldCursor = { pid: number; phase: 'maps'; after?: string } | { pid: number; phase: 'fds'; fdsRead: number };

/**
 * A file deleted while a process holds it open, or maps it, keeps its disk space, out of
 * du's sight: a step could fill the disk one such file at a time (each up to the per-file
 * limit) until its timeout. Counted from /proc: the open files (`fd/`) and mapped files
 * (`maps`, `map_files/`) of the step's processes that have no name left, on the filesystems
 * of `paths` (a private /tmp has its own size limit). Each look reads at most a share of them
 * (`perPass` descriptors' worth) and remembers what it found; a descriptor or mapping the
 * last looks did not reach counts as it was when last read. Every look moves the cursor on,
 * so however much one process maps or holds, the looks come round to every other.
 */
export function heldDeletedFiles(perPass = HELD_LOOKS_PER_PASS): HeldFiles {
  const found = new Map<number, HeldByProcess>();
  let cursor: HeldCursor = { pid: 0, phase: 'maps' };

  const look: HeldFiles['look'] = async (tree, paths) => {
    const devices = new Set((await Promise.all(paths.map((path) => stat(path).catch(() => undefined)))).flatMap((s) => (s ? [s.dev] : [])));
    const watched: MapsFilter = { devices, paths };
    for (const pid of found.keys()) if (!tree.has(pid)) found.delete(pid);
    const pids = [...tree.keys()].sort((a, b) => a - b);
    const first = Math.max(0, pids.findIndex((pid) => pid >= cursor.pid));
    // In lines of `maps`: a descriptor or a mapped file to stat costs MAPS_LINES_PER_LOOK.
    let budget = perPass * MAPS_LINES_PER_LOOK;
    for (let step = 0; step < pids.length && budget > 0; step++) {
      const pid = pids[(first + step) % pids.length]!;
      const at: HeldCursor = pid === cursor.pid ? cursor : { pid, phase: 'maps' };
      const own = found.get(pid) ?? { files: new Map<string, HeldFile>(), mapsSeen: new Set<string>() };
      found.set(pid, own);
      let fdsRead = at.phase === 'fds' ? at.fdsRead : 0;
      const dir = await liveDirOf(pid, tree.get(pid)?.state);
      if (at.phase === 'maps') {
        const read = await readMaps(pid, dir, watched, own, at.after, budget);
        budget -= read.cost;
        if (read.stoppedAfter !== undefined) {
          cursor = { pid, phase: 'maps', after: read.stoppedAfter };
          break;
        }
        if (budget <= 0) {
          cursor = { pid, phase: 'fds', fdsRead: 0 };
          break;
        }
      }
      const fds = (await readdir(`${dir}/fd`).catch(() => [] as string[])).sort((a, b) => Number(a) - Number(b));
      // At least one: the look always gets on.
      const share = fds.slice(fdsRead, fdsRead + Math.max(1, Math.floor(budget / MAPS_LINES_PER_LOOK)));
      budget -= share.length * MAPS_LINES_PER_LOOK;
      for (let start = 0; start < share.length; start += HELD_BATCH) {
        const batch = share.slice(start, start + HELD_BATCH);
        const files = await Promise.all(batch.map((fd) => stat(`${dir}/fd/${fd}`).catch(() => undefined)));
        batch.forEach((fd, index) => {
          const file = files[index];
          if (file?.isFile() && file.nlink === 0 && devices.has(file.dev)) own.files.set(`fd/${fd}`, { id: `${file.dev}:${file.ino}`, bytes: file.blocks * 512 });
          else own.files.delete(`fd/${fd}`);
        });
        await yieldToLoop();
      }
      fdsRead += share.length;
      if (fdsRead < fds.length) {
        cursor = { pid, phase: 'fds', fdsRead };
        break;
      }
      // The whole list read: descriptors closed since then hold nothing.
      const open = new Set(fds.map((fd) => `fd/${fd}`));
      for (const key of own.files.keys()) if (key.startsWith('fd/') && !open.has(key)) own.files.delete(key);
      cursor = { pid: pids[(first + step + 1) % pids.length]!, phase: 'maps' };
      await yieldToLoop();
    }
    const counted = new Map<string, number>();
    for (const own of found.values()) for (const { id, bytes } of own.files.values()) counted.set(id, Math.max(bytes, counted.get(id) ?? 0));
    let bytes = 0;
    for (const size of counted.values()) bytes += size;
    return { bytes, inodes: counted.size };
  };
  return { look };
}

/**
 * Where a process's descriptors and mappings are read: its own folder, or a live thread's
 * once its main thread has exited while others run. That leader is a zombie whose `fd/` and
 * `maps` are empty, while the threads still hold every file of the process.
 */
async function liveDirOf(pid: number, state: string | undefined): Promise<string> {
  if (state !== 'Z') return `/proc/${pid}`;
  const live = (await readdir(`/proc/${pid}/task`).catch(() => [] as string[])).find((tid) => Number(tid) !== pid);
  return live === undefined ? `/proc/${pid}` : `/proc/${pid}/task/${live}`;
}

/** Which mapped deleted files count: those on the filesystems of `devices`, or whose path is under one of `paths`. */
export interface MapsFilter {
  devices: ReadonlySet<number>;
  paths: readonly string[];
}

/** A mapping of a deleted file, from one line of `/proc/<pid>/maps`. */
export interface DeletedMapping {
  /** `start-end`, the mapping's name in `map_files/`. */
  range: string;
  /** Device (as in st_dev) and inode the line gives. */
  device: number;
  inode: string;
  /** What the mapping covers of the file: all the size `maps` tells. */
  spanBytes: number;
  /** The file's path when it was deleted. */
  path: string;
}

const DELETED = ' (deleted)';
// start-end perms offset major:minor inode, padding, then the path to the end of the line (spaces and all; the kernel writes a newline in it as \012).
const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+) +(\/.*) \(deleted\)$/;

/**
 * The deleted file a line of `maps` maps, when it counts under `filter`. The line's device is
 * the filesystem's own (i_sb->s_dev), which is not what stat() says of the workspace on btrfs,
 * nor on overlayfs before Linux 6.7; the sandbox binds the workspace at the same path as
 * outside, so a path under one of the watched folders counts too.
 */
export function deletedMapping(line: string, filter: MapsFilter): DeletedMapping | undefined {
  if (!line.endsWith(DELETED)) return undefined;
  const match = MAPS_LINE.exec(line);
  if (!match) return undefined;
  const [, start, end, offset, major, minor, inode, path] = match;
  const device = encodeDevice(parseInt(major!, 16), parseInt(minor!, 16));
  if (!filter.devices.has(device) && !filter.paths.some((folder) => path!.startsWith(`${folder.replace(/\/+$/, '')}/`))) return undefined;
  return { range: `${start}-${end}`, device, inode: inode!, spanBytes: parseInt(offset!, 16) + (parseInt(end!, 16) - parseInt(start!, 16)), path: path! };
}

/**
 * Reads `pid`'s `maps` from the first area at or above `after` (from the start without it),
 * recording the deleted files it maps into `own`, until `budget` is spent. Returns what it
 * cost, and where it stopped unless it reached the end (then mappings the pass did not meet
 * are gone). A file's size comes from `map_files/` where the server may read it (root,
 * CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), else it counts what the mapping covers.
 */
async function readMaps(
  pid: number,
  /** Where `maps` is read (liveDirOf). */
  dir: string,
  filter: MapsFilter,
  own: HeldByProcess,
  after: string | undefined,
  budget: number,
): Promise<{ cost: number; stoppedAfter?: string }> {
  if (after === undefined) own.mapsSeen.clear();
  const text = await readFile(`${dir}/maps`, 'utf8').catch(() => '');
  let cost = 0;
  let lastEnd = after;
  let lines = 0;
  for (let from = 0; from < text.length; ) {
    const newline = text.indexOf('\n', from);
    const line = text.slice(from, newline < 0 ? text.length : newline);
    from = newline < 0 ? text.length : newline + 1;
    const dash = line.indexOf('-');
    if (after !== undefined && compareHex(line.slice(0, dash), after) < 0) continue;
    if (cost >= budget) return { cost, stoppedAfter: lastEnd ?? '0' };
    cost++;
    lastEnd = line.slice(dash + 1, line.indexOf(' '));
    if (++lines % MAPS_LINES_BATCH === 0) await yieldToLoop();
    const mapping = deletedMapping(line, filter);
    if (!mapping) continue;
    const key = `map/${mapping.device}:${mapping.inode}`;
    if (own.mapsSeen.has(key)) continue;
    own.mapsSeen.add(key);
    cost += MAPS_LINES_PER_LOOK;
    const file = await stat(`/proc/${pid}/map_files/${mapping.range}`).catch(() => undefined);
    // A name that only ends in " (deleted)": du sees that file.
    if (file && file.nlink > 0) own.files.delete(key);
    // With map_files, the identity stat gives, which a descriptor of the same file gets too.
    else if (file) own.files.set(key, { id: `${file.dev}:${file.ino}`, bytes: file.blocks * 512 });
    else own.files.set(key, { id: `${mapping.device}:${mapping.inode}`, bytes: mapping.spanBytes });
  }
  for (const key of own.files.keys()) if (key.startsWith('map/') && !own.mapsSeen.has(key)) own.files.delete(key);
  return { cost };
}

/** Orders two addresses as `maps` writes them (lower-case hex, at least 8 digits). */
function compareHex(a: string, b: string): number {
  const [x, y] = [a.replace(/^0+/, ''), b.replace(/^0+/, '')];
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
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
