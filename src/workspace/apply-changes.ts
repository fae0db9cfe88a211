import { lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutputEvent } from '../generations/output-parser.js';
import { UnsafeOutputError, assertSafeRelativePath, describePath } from '../generations/safe-path.js';
import { fileDigest, type GeneratedFile } from './workspace.js';
import { ignoreMissing, refusedAs, writeFileInside } from './write-inside.js';

/**
 * A fix round's answer written into the generation's existing workspace, with the
 * same path rules as its first answer. Returns what changed, for generation_files.
 */
export async function applyChanges(dir: string, changes: readonly OutputEvent[]): Promise<{ changed: GeneratedFile[]; deleted: string[] }> {
  const latest = new Map<string, OutputEvent>();
  for (const change of changes) {
    assertSafeRelativePath(change.path);
    latest.set(change.path, change);
  }
  const changed: GeneratedFile[] = [];
  const deleted: string[] = [];
  for (const change of latest.values()) {
    if (change.type === 'file') {
      await writeFileInside(dir, change.path, change.content);
      changed.push({ path: change.path, content: change.content, ...fileDigest(change.content) });
    } else if (await removeInside(dir, change.path)) {
      deleted.push(change.path);
    }
  }
  return { changed, deleted };
}

/**
 * Removes one file, as the protocol's <delete> does; a symbolic link on the way is refused,
 * and a missing file (or a path through a file) is gone already. A folder is passed over and
 * reported as not deleted: <delete> names files, and a first answer's <delete> of a folder
 * changes nothing either.
 */
async function removeInside(dir: string, path: string): Promise<boolean> {
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const stats = await lstat(join(dir, ...segments.slice(0, i))).catch(ignoreMissing);
    if (stats?.isSymbolicLink()) throw new UnsafeOutputError(path, 'goes through a symbolic link');
    if (!stats?.isDirectory()) return true;
  }
  const stats = await lstat(join(dir, path)).catch(ignoreMissing);
  if (stats?.isDirectory()) return false;
  if (stats) await rm(join(dir, path), { force: true }).catch(refusedAs(path, 'deletes'));
  return true;
}
