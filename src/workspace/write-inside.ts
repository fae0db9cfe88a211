import { constants } from 'node:fs';
import { lchown, lstat, mkdir, open, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { OutputProtocolError } from '../generations/output-parser.js';
import { UnsafeOutputError, assertSafeRelativePath, describePath } from '../generations/safe-path.js';
import { giveOpened, type Owner, ownerOf } from './ownership.js';

/**
 * Writes `content` at `path` under `baseDir`, refusing any route out of it: unsafe path
 * text, a symlinked directory on the way, or a symlink in place of the file. What it creates
 * goes to the owner of `baseDir` (a root server's workspace is its build steps' user's: a later
 * step must be able to change what the server wrote, ownerOf).
 */
export async function writeFileInside(baseDir: string, path: string, content: string): Promise<void> {
  await writeFilesInside(baseDir, [[path, content]]);
}

/**
 * writeFileInside for many files (distinct paths) of one fresh directory that nothing
 * else writes to meanwhile (a workspace being created): each directory on the way is
 * checked once, and the files are written at the same time.
 */
export async function writeFilesInside(baseDir: string, files: readonly (readonly [path: string, content: string])[]): Promise<void> {
  const paths = new Set(files.map(([path]) => path));
  for (const path of paths) {
    assertSafeRelativePath(path);
    // A file that another path needs as its directory: refused before anything is created.
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      if (paths.has(parent)) throw notADirectory(path, parent);
    }
  }
  const base = await realpath(baseDir);
  const owner = await ownerOf(base);
  const checked = new Set<string>();
  for (const [path] of files) await ensureParents(base, path, checked, owner).catch(refusedAs(path, 'writes'));
  // Every write settles before a failure is reported: the caller may remove the directory then.
  const written = await Promise.allSettled(files.map(([path, content]) => writeChecked(base, path, content, owner).catch(refusedAs(path, 'writes'))));
  const failed = written.find((result) => result.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Creates the parents one level at a time: `mkdir -p` would follow a symlink and create outside. */
async function ensureParents(base: string, path: string, checked: Set<string>, owner: Owner | undefined): Promise<void> {
  const segments = path.split('/');
  let dir = base;
  for (const [index, segment] of segments.slice(0, -1).entries()) {
    dir = join(dir, segment);
    if (checked.has(dir)) continue;
    const stats = await lstat(dir).catch(ignoreMissing);
    if (!stats) {
      await mkdir(dir);
      // lchown: what is at that path now, never what a link there points at.
      if (owner) await lchown(dir, owner.uid, owner.gid);
    } else if (stats.isSymbolicLink()) throw new UnsafeOutputError(path, 'goes through a symbolic link');
    else if (!stats.isDirectory()) throw notADirectory(path, segments.slice(0, index + 1).join('/'));
    checked.add(dir);
  }
}

function notADirectory(path: string, parent: string): OutputProtocolError {
  return new OutputProtocolError(`The model's output writes ${describePath(path)} but ${describePath(parent)} is a file`);
}

/**
 * For `.catch()`: what the workspace refused at `path` (a folder in the file's place, a file
 * on the way, a folder the build made read-only) becomes the run's error naming the path;
 * any other error is rethrown as it is.
 */
export function refusedAs(path: string, action: 'writes' | 'deletes') {
  return (error: NodeJS.ErrnoException): never => {
    const shown = describePath(path);
    const reasons: Record<string, string> = {
      EISDIR: `${shown} is a folder (the build may have created it)`,
      ENOTDIR: `a part of the way to ${shown} is a file`,
      EACCES: `the workspace may not be changed there (permission denied: the build may have made the folder read-only)`,
    };
    const reason = reasons[error.code === 'EPERM' ? 'EACCES' : (error.code ?? '')];
    throw reason ? new OutputProtocolError(`The model's output ${action} ${shown} but ${reason}`) : error;
  };
}

async function writeChecked(base: string, path: string, content: string, owner: Owner | undefined): Promise<void> {
  // Final check on the resolved location, in case the tree changed under us.
  const inside = relative(base, await realpath(dirname(join(base, path))));
  if (inside.split(sep)[0] === '..' || isAbsolute(inside)) {
    throw new UnsafeOutputError(path, 'resolves outside the workspace');
  }

  // O_NONBLOCK: a named pipe the build left in the file's place would hold a blocking open
  // (and a thread of libuv's pool) until some reader came; now it fails at once (ENXIO) or
  // opens and is refused below, unwritten. Regular files ignore the flag.
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  const handle = await open(join(base, path), flags).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ELOOP') throw new UnsafeOutputError(path, 'is a symbolic link');
    if (error.code === 'ENXIO') throw new UnsafeOutputError(path, 'is not a regular file');
    throw error;
  });
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new UnsafeOutputError(path, 'is not a regular file');
    // A new file is the server's until given.
    await giveOpened(handle, stats, owner);
    await handle.writeFile(content, 'utf8');
  } finally {
    await handle.close();
  }
}

/**
 * The directory at `path` under `base` when every part of it is a directory of its own,
 * undefined when a part is missing, a file or a symbolic link: what a build left there is
 * read only where the build could not point it elsewhere (a `build` linked to a host folder).
 */
export async function directoryInside(base: string, path: string): Promise<string | undefined> {
  assertSafeRelativePath(path);
  let dir = base;
  for (const segment of path.split('/')) {
    dir = join(dir, segment);
    if (!(await lstat(dir).catch(ignoreMissing))?.isDirectory()) return undefined;
  }
  return dir;
}

/** For `.catch()`: a missing file becomes undefined, any other error is rethrown. */
export function ignoreMissing(error: NodeJS.ErrnoException): undefined {
  if (error.code === 'ENOENT') return undefined;
  throw error;
}
