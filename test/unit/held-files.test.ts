import { type FileHandle, mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { heldDeletedFiles } from '../../src/toolchain/step-limits.js';

// The disk watch's look at files a step deleted but holds: a bounded share of the
// descriptors per look, going on where the last look stopped, so a step holding thousands
// of them costs the server a little each second instead of stalling its event loop.

describe.skipIf(process.platform !== 'linux')('the look at deleted files a step holds', () => {
  let dir: string;
  const handles: FileHandle[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-held-'));
  });

  afterEach(async () => {
    for (const handle of handles.splice(0)) await handle.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

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
    const looks = Math.ceil(((await readdir('/proc/self/fd')).length + 1) / 7) + 1;

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
});
