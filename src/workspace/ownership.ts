import { constants, type Stats } from 'node:fs';
import { type FileHandle, lchown, lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

// A root server's build steps run as an unprivileged host user (sandbox.ts): what the server
// writes for a step to change (a workspace, the project's caches, its Flutter lock) is given
// to that user. Never through a symbolic link: a step may have planted one anywhere it could
// write, and whatever the server gave away by following it would be the step's.

/** A host user and group, by number. */
export interface Owner {
  uid: number;
  gid: number;
}

/**
 * Who new files and folders under `dir` go to: its owner, when the server is root and `dir` is
 * another user's (a workspace made for the steps' user); undefined when they stay the server's.
 */
export async function ownerOf(dir: string): Promise<Owner | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const stats = await lstat(dir);
  return stats.uid === 0 ? undefined : { uid: stats.uid, gid: stats.gid };
}

/**
 * Gives the open file to `owner` when it is not theirs (`stats`: the handle's): through its
 * descriptor, so it is the file opened, whatever has happened to its name since.
 */
export async function giveOpened(handle: FileHandle, stats: Stats, owner: Owner | undefined): Promise<void> {
  if (owner && (stats.uid !== owner.uid || stats.gid !== owner.gid)) await handle.chown(owner.uid, owner.gid);
}

/**
 * Gives the folder `dir` and everything in it to `owner`, children before their folder, without
 * following a symbolic link (the last part of `dir` included). A folder that is `owner`'s already
 * is left as it is, unread: all in it is theirs, or was given with it. Each folder is walked
 * through a descriptor opened on it (`/proc/self/fd/N/name`), so a folder swapped for a link
 * meanwhile, by a step that can write beside it, is never entered.
 */
export async function giveTree(dir: string, owner: Owner): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch((error: NodeJS.ErrnoException) => {
    // Gone, or no longer a folder (a link in its place): nothing of it to give.
    if (error.code === 'ENOENT' || error.code === 'ELOOP' || error.code === 'ENOTDIR') return undefined;
    throw error;
  });
  if (!handle) return;
  try {
    if ((await handle.stat()).uid === owner.uid) return;
    const here = `/proc/self/fd/${handle.fd}`;
    for (const name of await readdir(here)) {
      const entry = join(here, name);
      const stats = await lstat(entry).catch(() => undefined);
      if (!stats) continue;
      if (stats.isDirectory()) await giveTree(entry, owner);
      else if (stats.uid !== owner.uid || stats.gid !== owner.gid) await lchownQuiet(entry, owner);
    }
    await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}

async function lchownQuiet(path: string, owner: Owner): Promise<void> {
  await lchown(path, owner.uid, owner.gid).catch((error: NodeJS.ErrnoException) => {
    // Removed meanwhile: nothing to give.
    if (error.code !== 'ENOENT') throw error;
  });
}
