import { createHash } from 'node:crypto';
import { chmod, lchown, lstat, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RunError } from '../errors.js';
import { MAX_VERSION_BYTES, MAX_VERSION_FILES, type OutputEvent } from '../generations/output-parser.js';
import { assertSafeRelativePath, describePath, UnsafeOutputError } from '../generations/safe-path.js';
import { runProcess } from '../toolchain/spawner.js';
import type { Owner } from './ownership.js';
import { ignoreMissing, writeFilesInside } from './write-inside.js';

export interface GeneratedFile {
  path: string;
  content: string;
  /** UTF-8 byte length of `content`. */
  size: number;
  /** Lowercase hex SHA-256 of the UTF-8 `content`. */
  sha256: string;
}

export interface CreateWorkspaceInput {
  root: string;
  projectId: string;
  generationId: string;
  template: Record<string, string>;
  /**
   * The version it builds on: its lineage's latest that wrote files (generationStore.versionOfLineage,
   * so a parent that ended before writing any hands on the one before it); empty when there is
   * none, and then the workspace starts from `template`.
   */
  parentFiles: { path: string; content: string }[];
  changes: OutputEvent[];
  /**
   * What the changes are, for a version too large. A restore's are a version Kiln kept: case
   * twins it may hold from before they were refused are written as they were.
   */
  changesAre: 'this answer' | 'this restore';
  /**
   * Who the workspace and its files go to: the host user a root server's build steps run as
   * (BuildSandbox.stepOwner), so they can write it; unset, the server's. Later writes into it
   * go to the same user (writeFilesInside).
   */
  owner?: Owner;
}

const TMP_PREFIX = '.tmp-';
/**
 * `<project>/.created-<generation>`: written by Kiln when it makes the workspace, beside it
 * and not in it, so no build can change its time (a build sets its own folder's mtime at
 * will: `touch -d 2100-01-01 .`). Pruning goes by it.
 */
const CREATED_PREFIX = '.created-';
// A younger temporary directory may be a workspace another worker is writing right now.
const STALE_TMP_MS = 60 * 60 * 1000;
const ID = /^[A-Za-z0-9_-]+$/;

export function fileDigest(content: string): { size: number; sha256: string } {
  return {
    size: Buffer.byteLength(content, 'utf8'),
    sha256: createHash('sha256').update(content, 'utf8').digest('hex'),
  };
}

/**
 * What a generation starts from: the version it builds on (its parent's, or, when the parent
 * ended before it wrote any file, the nearest earlier one of its lineage), or the target's
 * template when there is none (a first generation, or a lineage that never wrote a file).
 * Never both: a template file the model deleted stays deleted in every later version.
 */
export function startingVersion(template: Record<string, string>, parentFiles: readonly { path: string; content: string }[]): Map<string, string> {
  return parentFiles.length > 0 ? new Map(parentFiles.map((file) => [file.path, file.content])) : new Map(Object.entries(template));
}

/**
 * Stored files whose paths Kiln refuses today (kept before a rule that now forbids them, such
 * as lock files) apart from the others: they were never the model's answer to this run, so a
 * run leaves them out instead of failing on them.
 */
export function withoutRefusedPaths<T extends { path: string }>(files: readonly T[]): { kept: T[]; refused: string[] } {
  const kept: T[] = [];
  const refused: string[] = [];
  for (const file of files) {
    try {
      assertSafeRelativePath(file.path);
      kept.push(file);
    } catch (error) {
      if (!(error instanceof UnsafeOutputError)) throw error;
      refused.push(file.path);
    }
  }
  return { kept, refused };
}

/** A copy of `version` (path → content) with `changes` made. */
function withChanges(version: ReadonlyMap<string, string>, changes: readonly OutputEvent[]): Map<string, string> {
  const files = new Map(version);
  for (const change of changes) {
    if (change.type === 'file') files.set(change.path, change.content);
    else files.delete(change.path);
  }
  return files;
}

/** A version larger than MAX_VERSION_FILES or MAX_VERSION_BYTES: nothing of it is stored. */
export class VersionTooLargeError extends RunError {
  override readonly name = 'VersionTooLargeError';
  readonly code = 'UNSAFE_OUTPUT';
}

const MIB = 1024 * 1024;

/** Throws VersionTooLargeError when `files` (path → content) is more than a version may hold; `after` says what formed it. */
function assertVersionFits(files: ReadonlyMap<string, string>, after: string): void {
  if (files.size > MAX_VERSION_FILES) {
    throw new VersionTooLargeError(
      `The project would hold ${files.size.toLocaleString('en-US')} files ${after}; Kiln keeps at most ${MAX_VERSION_FILES.toLocaleString('en-US')} files in a version.`,
    );
  }
  let bytes = 0;
  for (const content of files.values()) bytes += Buffer.byteLength(content, 'utf8');
  if (bytes > MAX_VERSION_BYTES) {
    // Rounded up, so a version just over the limit never reads as the limit itself.
    const mib = (n: number) => `${Math.ceil((n / MIB) * 100) / 100} MiB`;
    throw new VersionTooLargeError(`The project's files would take ${mib(bytes)} ${after}; Kiln keeps at most ${mib(MAX_VERSION_BYTES)} in a version.`);
  }
}

/**
 * Throws UnsafeOutputError for a file of `changes` whose path differs only in case from another
 * file of the version `files` (made from `before`): unpacked on macOS or Windows, one would
 * overwrite the other. A pair `before` already had is left alone, rewritten or not: it was never
 * this answer's, and a follow-up must still be able to fix either file.
 */
function assertNoCaseTwins(before: ReadonlyMap<string, string>, files: ReadonlyMap<string, string>, changes: readonly OutputEvent[]): void {
  const written = changes.filter((change) => change.type === 'file').map((change) => change.path);
  if (written.length === 0) return;
  const byFolded = new Map<string, string[]>();
  for (const path of files.keys()) {
    const folded = path.toLowerCase();
    byFolded.set(folded, [...(byFolded.get(folded) ?? []), path]);
  }
  for (const path of written) {
    const twin = byFolded.get(path.toLowerCase())?.find((other) => other !== path && !(before.has(path) && before.has(other)));
    if (twin !== undefined) {
      throw new UnsafeOutputError(path, `differs only in case from ${describePath(twin)}: unpacked on macOS or Windows, one would overwrite the other`);
    }
  }
}

/**
 * `before` (path → content) with `changes` made, checked before anything is written: it must fit
 * in a version, and what an answer or a fix round writes must not be a case twin. A restore
 * writes its version as it was kept, twins and all.
 */
export function versionAfter(before: ReadonlyMap<string, string>, changes: readonly OutputEvent[], after: 'this answer' | 'this fix round' | 'this restore'): Map<string, string> {
  const files = withChanges(before, changes);
  assertVersionFits(files, `after ${after}`);
  if (after !== 'this restore') assertNoCaseTwins(before, files, changes);
  return files;
}

/**
 * Builds `<root>/<projectId>/<generationId>` from the version it starts from (startingVersion),
 * then the model's changes. It is written in a temporary directory beside it and renamed
 * into place, so the workspace either appears whole or not at all.
 */
export async function createWorkspace(input: CreateWorkspaceInput): Promise<{ dir: string; files: GeneratedFile[] }> {
  const projectDir = join(input.root, assertId(input.projectId));
  const dir = join(projectDir, assertId(input.generationId));

  for (const change of input.changes) assertSafeRelativePath(change.path);
  const start = startingVersion(input.template, input.parentFiles);
  const contents = versionAfter(start, input.changes, input.changesAre);
  // Code-unit order is stable across locales; it also puts a directory's name before its contents.
  const paths = [...contents.keys()].sort();

  // The server's alone: files a build writes are its steps' user's (the server's own, or the
  // unprivileged one a root server's steps run as), and a step may open its own folder to
  // everyone (`chmod 755 .`), so no one else may reach into the project's folder. WORKSPACES_DIR
  // too when Kiln makes it (an existing one keeps the operator's mode); a project's folder is
  // Kiln's, and tightened if older. The steps' user reaches its workspace only through the
  // sandbox's bind of it, never through these folders.
  await mkdir(projectDir, { recursive: true, mode: 0o700 });
  await chmod(projectDir, 0o700);
  const tmp = await mkdtemp(join(projectDir, TMP_PREFIX));
  try {
    // Before the files, which take its owner: the folder is new, and no step can reach it.
    if (input.owner) await lchown(tmp, input.owner.uid, input.owner.gid);
    await writeFilesInside(tmp, paths.map((path) => [path, contents.get(path)!] as const));
    // rename() would silently replace an empty directory, so refuse an existing one first.
    if (await lstat(dir).catch(ignoreMissing)) throw new Error(`The workspace ${dir} already exists`);
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  await writeFile(createdMarker(projectDir, input.generationId), '');
  const files = paths.map((path) => {
    const content = contents.get(path)!;
    return { path, content, ...fileDigest(content) };
  });
  return { dir, files };
}

/**
 * The project's own tool caches (npm, pub), beside its generations' workspaces: never
 * shared with another project, so no project can poison another's dependencies.
 * `workspaceDir` is a generation's workspace, `<root>/<project>/<generation>`.
 */
export function projectCacheDir(workspaceDir: string): string {
  return join(dirname(workspaceDir), '.cache');
}

export async function removeWorkspace(root: string, projectId: string, generationId: string): Promise<void> {
  const projectDir = join(root, assertId(projectId));
  await removeTree(join(projectDir, assertId(generationId)));
  await rm(createdMarker(projectDir, generationId), { force: true });
}

function createdMarker(projectDir: string, generationId: string): string {
  return join(projectDir, CREATED_PREFIX + generationId);
}

/**
 * When Kiln made a generation's workspace: its marker's time. A workspace made before the
 * markers has the older of its folder's mtime and ctime: a build can set the mtime, but the
 * kernel sets the ctime to the moment of each change, so the folder never looks newer than
 * the last moment its build ran.
 */
async function createdAt(projectDir: string, generationId: string, folder: { mtimeMs: number; ctimeMs: number }): Promise<number> {
  const marker = await stat(createdMarker(projectDir, generationId)).catch(ignoreMissing);
  return marker?.mtimeMs ?? Math.min(folder.mtimeMs, folder.ctimeMs);
}

export interface PruneGuard {
  /**
   * Which of these generations have finished. Only their workspaces go: a build may still run
   * in another's, however old its folder looks (a long build stops touching it early).
   */
  finishedAmong(generationIds: string[]): Promise<ReadonlySet<string>>;
  /** Told of each folder that could not be removed; the others are removed all the same. */
  onFailure(dir: string, error: unknown): void;
}

/**
 * Keeps the `keep` most recently made generation workspaces of a project and removes
 * the rest of those whose generation has finished, with temporary directories left over
 * for more than an hour. Returns the generation ids removed.
 */
export async function pruneWorkspaces(root: string, projectId: string, keep: number, guard: PruneGuard): Promise<string[]> {
  if (!Number.isInteger(keep) || keep < 0) throw new RangeError(`keep must be a whole number >= 0, got ${keep}`);
  const projectDir = join(root, assertId(projectId));
  const entries = (await readdir(projectDir, { withFileTypes: true }).catch(ignoreMissing)) ?? [];
  const now = Date.now();
  const generations: { id: string; createdMs: number }[] = [];
  // One folder that cannot be removed never keeps the others.
  const removing = async (dir: string): Promise<boolean> => {
    try {
      await removeTree(dir);
      return true;
    } catch (error) {
      guard.onFailure(dir, error);
      return false;
    }
  };
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const stats = await stat(join(projectDir, entry.name)).catch(ignoreMissing);
    if (!stats) continue;
    if (entry.name.startsWith(TMP_PREFIX)) {
      const stale = now - stats.mtimeMs > STALE_TMP_MS;
      if (stale) await removing(join(projectDir, entry.name));
    } else if (ID.test(entry.name)) {
      generations.push({ id: entry.name, createdMs: await createdAt(projectDir, entry.name, stats) });
    }
  }
  const older = generations
    .sort((a, b) => b.createdMs - a.createdMs)
    .slice(keep)
    .map((generation) => generation.id);
  // Asked after the listing: a generation that has finished stays finished.
  const finished = older.length > 0 ? await guard.finishedAmong(older) : new Set<string>();
  const removed: string[] = [];
  for (const id of older) {
    if (!finished.has(id) || !(await removing(join(projectDir, id)))) continue;
    await rm(createdMarker(projectDir, id), { force: true }).catch((error: unknown) => guard.onFailure(createdMarker(projectDir, id), error));
    removed.push(id);
  }
  return removed;
}

const REMOVE_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * Removes a tree a build wrote, whatever it did to it. Its code owns the files, so it can take
 * its owner's rights from a folder (`chmod 300`), which Node's rm (and a server that is not
 * root) cannot then read or empty: the owner gets them back first. It can also nest folders
 * deeper than a path may be long (ENAMETOOLONG in Node's rm); coreutils rm walks any depth.
 */
async function removeTree(dir: string): Promise<void> {
  const env = { PATH: '/usr/bin:/bin', LC_ALL: 'C' };
  // Never follows symlinks (chmod -R does not by default); what it cannot fix, rm reports.
  await runProcess({ command: 'chmod', args: ['-R', 'u+rwX', '--', dir], env }, REMOVE_TIMEOUT_MS);
  const result = await runProcess({ command: 'rm', args: ['-rf', '--', dir], env }, REMOVE_TIMEOUT_MS);
  // No rm to start (not a Unix-like system): Node's own.
  if (!('exitCode' in result)) return rm(dir, { recursive: true, force: true });
  if (result.exitCode !== 0 || result.timedOut) {
    throw new Error(`Could not remove ${dir}: ${result.timedOut ? 'rm timed out' : (result.stderr.trim().split('\n')[0] || `rm exited with ${result.exitCode}`)}`);
  }
}

// Ids become directory names, so they must be one plain segment.
function assertId(id: string): string {
  if (!ID.test(id)) throw new Error(`Invalid workspace id ${JSON.stringify(id)}`);
  return id;
}
