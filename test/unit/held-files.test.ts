import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { type FileHandle, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readProcStat } from '../../src/proc-stat.js';
import { deletedMapping, heldDeletedFiles } from '../../src/toolchain/step-limits.js';

// The disk watch's look at files a step deleted but holds: a bounded share of the
// descriptors and mappings per look, going on where the last look stopped, so a step
// holding thousands of them costs the server a little each second instead of stalling its
// event loop, and no process of the step can keep the looks from the others.

const hasPython = process.platform === 'linux' && spawnSync('python3', ['-c', 'import ctypes']).status === 0;

/** Looks enough for one round over `pid`: each look gets at least one line of `maps` or one descriptor further. */
async function looksPerRound(pid: number): Promise<number> {
  const lines = (await readFile(`/proc/${pid}/maps`, 'utf8')).split('\n').length;
  return lines + (await readdir(`/proc/${pid}/fd`)).length + 2;
}

describe.skipIf(process.platform !== 'linux')('the look at deleted files a step holds', () => {
  let dir: string;
  const handles: FileHandle[] = [];
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-held-'));
  });

  afterEach(async () => {
    for (const handle of handles.splice(0)) await handle.close().catch(() => undefined);
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  /** A Python process in `dir` running `setup`, once it has printed that it is ready; it then runs `then` (waits to be killed). */
  async function startHolder(setup: string[], then = 'signal.pause()'): Promise<number> {
    // libc's mmap itself: Python's mmap keeps a descriptor of its own.
    const script = [
      'import ctypes, os, signal',
      'libc = ctypes.CDLL(None)',
      'libc.mmap.restype = ctypes.c_void_p',
      'libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]',
      'libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]',
      ...setup,
      'print("ready", flush=True)',
      then,
    ].join('\n');
    const child = spawn('python3', ['-c', script], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    for await (const line of createInterface({ input: child.stdout! })) if (line === 'ready') return child.pid!;
    throw new Error(`the holder ended before it was ready (${child.exitCode ?? child.signalCode})`);
  }

  /** Python lines: write `name` (64 KiB), keep it open, delete it. */
  const holdOpen = (name: string) => [`held = os.open("${name}", os.O_RDWR | os.O_CREAT)`, 'os.write(held, b"x" * 65536)', `os.unlink("${name}")`];

  it('reads a share of the descriptors per look, finds a held file within one round of looks, and forgets it once closed', async () => {
    // 40 descriptors before the held file, so it is never among the first look's 8.
    for (let i = 0; i < 40; i++) handles.push(await open('/dev/null', 'r'));
    const held = await open(join(dir, 'held'), 'w+');
    handles.push(held);
    await held.write(Buffer.alloc(1024 * 1024, 1));
    await held.sync();
    await rm(join(dir, 'held'));
    // This process stands in for a step's process tree.
    const tree = new Map([[process.pid, {}]]);
    const looks = await looksPerRound(process.pid);

    const scan = heldDeletedFiles(8);
    expect(await scan.look(tree, [dir])).toEqual({ bytes: 0, inodes: 0 });
    let found = { bytes: 0, inodes: 0 };
    for (let i = 0; i < looks && found.inodes === 0; i++) found = await scan.look(tree, [dir]);
    expect(found.inodes).toBe(1);
    expect(found.bytes).toBeGreaterThanOrEqual(1024 * 1024);
    // Still counted on the looks that do not reach it again.
    expect((await scan.look(tree, [dir])).inodes).toBe(1);

    await held.close();
    for (let i = 0; i < looks + 1; i++) found = await scan.look(tree, [dir]);
    expect(found).toEqual({ bytes: 0, inodes: 0 });
  });

  it("finds a held file once the process's main thread has exited and another thread holds it", async () => {
    // Its main thread gone, the process lists no descriptor and no mapping of its own; the sleeping thread keeps them.
    const pid = await startHolder([...holdOpen('held'), 'import threading, time', 'threading.Thread(target=lambda: time.sleep(3600)).start()'], 'libc.pthread_exit(None)');
    await expect.poll(async () => (await readProcStat(pid))?.state, { timeout: 30_000 }).toBe('Z');
    const tree = new Map([[pid, (await readProcStat(pid))!]]);
    expect(await readdir(`/proc/${pid}/fd`).catch(() => [])).toEqual([]);
    const scan = heldDeletedFiles(8);
    let found = { bytes: 0, inodes: 0 };
    for (let i = 0; i < 1000 && found.inodes === 0; i++) found = await scan.look(tree, [dir]);
    expect(found.inodes).toBe(1);
    expect(found.bytes).toBeGreaterThanOrEqual(65536);
  });

  it('counts nothing of processes that left the tree', async () => {
    const held = await open(join(dir, 'held'), 'w+');
    handles.push(held);
    await held.write(Buffer.alloc(64 * 1024, 1));
    await held.sync();
    await rm(join(dir, 'held'));
    const scan = heldDeletedFiles();
    expect((await scan.look(new Map([[process.pid, {}]]), [dir])).inodes).toBe(1);
    expect(await scan.look(new Map(), [dir])).toEqual({ bytes: 0, inodes: 0 });
  });

  it.skipIf(!hasPython)('gets past a process that maps more deleted files than one look reads, to its open ones', async () => {
    // 5 files mapped and deleted (no descriptor left), and one held open: a look of 2 cannot read them all.
    const pid = await startHolder([
      'for i in range(5):',
      '    fd = os.open(f"m{i}", os.O_RDWR | os.O_CREAT)',
      '    os.write(fd, b"x" * 65536)',
      '    assert libc.mmap(None, 4096, 1, 1, fd, 0) != ctypes.c_void_p(-1).value',
      '    os.close(fd)',
      '    os.unlink(f"m{i}")',
      ...holdOpen('open'),
    ]);
    const tree = new Map([[pid, {}]]);
    const scan = heldDeletedFiles(2);
    const looks = await looksPerRound(pid);
    let found = { bytes: 0, inodes: 0 };
    for (let i = 0; i < looks && found.inodes < 6; i++) found = await scan.look(tree, [dir]);
    expect(found.inodes).toBe(6);
    // The open file's 64 KiB, and of each mapped one at least the page mapped.
    expect(found.bytes).toBeGreaterThanOrEqual(65536 + 5 * 4096);
  });

  it.skipIf(!hasPython)('reads the mappings of a process with thousands of them over several looks, then its descriptors', async () => {
    // 3000 areas (every other page of one mapping made readable), none of them a file, then a deleted file held open.
    const pid = await startHolder([
      'base = libc.mmap(None, 6000 * 4096, 0, 0x22, -1, 0)',
      'for i in range(3000): assert libc.mprotect(base + 2 * i * 4096, 4096, 1) == 0',
      ...holdOpen('open'),
    ]);
    const tree = new Map([[pid, {}]]);
    const scan = heldDeletedFiles(64);
    // A share of 64 descriptors' worth does not cover 3000 lines of maps: the first look ends inside them.
    expect(await scan.look(tree, [dir])).toEqual({ bytes: 0, inodes: 0 });
    const looks = await looksPerRound(pid);
    let found = { bytes: 0, inodes: 0 };
    for (let i = 0; i < looks && found.inodes === 0; i++) found = await scan.look(tree, [dir]);
    expect(found.inodes).toBe(1);
  });
});

describe('a line of /proc/<pid>/maps', () => {
  const workspace = '/srv/kiln/workspaces/p/g';
  const line = (device: string, path: string) => `7f3a1c000000-7f3a1c001000 r--s 00000000 ${device} 1234567                    ${path}`;

  it('counts a deleted file under a watched folder whatever device it names (btrfs, overlayfs before 6.7), its path spaces and all', () => {
    const mapping = deletedMapping(line('00:2a', `${workspace}/out dir/a  b (deleted)`), { devices: new Set([0x801]), paths: [`${workspace}/`] });
    expect(mapping).toEqual({ range: '7f3a1c000000-7f3a1c001000', device: 42, inode: '1234567', spanBytes: 4096, path: `${workspace}/out dir/a  b` });
  });

  it('counts a deleted file on a watched device wherever its path, and nothing else', () => {
    expect(deletedMapping(line('08:01', '/elsewhere/a (deleted)'), { devices: new Set([0x801]), paths: [workspace] })?.device).toBe(0x801);
    // Not under the folder: a sibling whose name starts the same, or the device does not match.
    expect(deletedMapping(line('00:2a', `${workspace}x/a (deleted)`), { devices: new Set([0x801]), paths: [workspace] })).toBeUndefined();
    expect(deletedMapping(line('00:2a', '/elsewhere/a (deleted)'), { devices: new Set([0x801]), paths: [workspace] })).toBeUndefined();
    // Not deleted, or not a file.
    expect(deletedMapping(line('08:01', `${workspace}/a`), { devices: new Set([0x801]), paths: [workspace] })).toBeUndefined();
    expect(deletedMapping('7f3a1c000000-7f3a1c001000 rw-s 00000000 00:01 5                          /dev/zero (deleted)', { devices: new Set([0x801]), paths: [workspace] })).toBeUndefined();
  });
});
