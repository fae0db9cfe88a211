import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { OutputProtocolError } from '../generations/output-parser.js';
import { UnsafeOutputError, assertSafeRelativePath, describePath } from '../generations/safe-path.js';

/**
 * Writes `content` at `path` under `baseDir`, refusing any route out of it: unsafe path
 * text, a symlinked directory on the way, or a symlink in place of the file.
 */
export async function writeFileInside(baseDir: string, path: string, content: string): Promise<void> {
  assertSafeRelativePath(path);
  const base = await realpath(baseDir);
  const segments = path.split('/');

  // Create parents one level at a time: `mkdir -p` would follow a symlink and create outside.
  let dir = base;
  for (const [index, segment] of segments.slice(0, -1).entries()) {
    dir = join(dir, segment);
    const stats = await lstat(dir).catch(ignoreMissing);
    if (!stats) await mkdir(dir);
    else if (stats.isSymbolicLink()) throw new UnsafeOutputError(path, 'goes through a symbolic link');
    else if (!stats.isDirectory()) {
      const parent = segments.slice(0, index + 1).join('/');
      throw new OutputProtocolError(
        `The model's output writes ${describePath(path)} but ${describePath(parent)} is a file`,
      );
    }
  }

  // Final check on the resolved location, in case the tree changed under us.
  const inside = relative(base, await realpath(dirname(join(base, path))));
  if (inside.split(sep)[0] === '..' || isAbsolute(inside)) {
    throw new UnsafeOutputError(path, 'resolves outside the workspace');
  }

  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  const handle = await open(join(base, path), flags).catch((error: NodeJS.ErrnoException) => {
    throw error.code === 'ELOOP' ? new UnsafeOutputError(path, 'is a symbolic link') : error;
  });
  try {
    await handle.writeFile(content, 'utf8');
  } finally {
    await handle.close();
  }
}

/** For `.catch()`: a missing file becomes undefined, any other error is rethrown. */
export function ignoreMissing(error: NodeJS.ErrnoException): undefined {
  if (error.code === 'ENOENT') return undefined;
  throw error;
}
