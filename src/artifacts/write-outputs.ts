import { constants, type Dirent } from 'node:fs';
import { lstat, open, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { RunError } from '../errors.js';
import { describePath } from '../generations/safe-path.js';
import { directoryInside, ignoreMissing } from '../workspace/write-inside.js';
import { type BlobBytes, type BlobStore, sha256Of } from './blob-store.js';
import type { ArtifactRow } from './manifest-store.js';

// A generation's outputs go to the store before it is marked SUCCEEDED: its files
// (Generation.files) as SOURCE, and the web bundle its build produced as BUNDLE.

// Folders (and links, which are left behind) count too: a build could leave a million empty ones for the walk below.
const MAX_BUNDLE_ENTRIES = 10_000;
const MAX_BUNDLE_BYTES = 256 * 1024 * 1024;
// A cold preview reads a blob whole (PostgreSQL hands bytea over as hex text, twice its size).
const MAX_BUNDLE_FILE_BYTES = 64 * 1024 * 1024;
// A preview keeps its bundle's paths in memory, and an empty file costs nothing else.
const MAX_BUNDLE_PATH_BYTES = 1024;
const MAX_BUNDLE_PATHS_BYTES = 2 * 1024 * 1024;
// Blobs go to the store in batches of about this many files or bytes: one statement each on
// PostgreSQL, where a statement per blob was a round trip each.
const BATCH_FILES = 100;
const BATCH_BYTES = 4 * 1024 * 1024;

/** The build left a bundle Kiln does not keep: the run ends as BUILD_FAILED, with nothing stored. */
export class BundleRefusedError extends RunError {
  override readonly name = 'BundleRefusedError';
  readonly code = 'BUILD_FAILED';
}

const tooLarge = (reason: string) => new BundleRefusedError(`The web bundle is too large to keep: ${reason}.`);

// What the build's own code can do to what it leaves (on a server that is not root, where
// steps run as its user): take a folder's or a file's permissions away, put a link or a file
// where the walk found something else. Its failure, not Kiln's.
const UNREADABLE = new Set(['EACCES', 'EPERM', 'ENOTDIR', 'ELOOP']);

/** For `.catch()` on a read of the bundle at `path` (relative to the workspace or the bundle): what the build made unreadable refuses the bundle. */
const refuseUnreadable = (path: string) => (error: NodeJS.ErrnoException) => {
  if (!UNREADABLE.has(error.code ?? '')) throw error;
  throw new BundleRefusedError(`The web bundle could not be read: ${describePath(path)} (${error.code}).`);
};
// A name that is not UTF-8 has no path in the manifest or a preview's URL; node would read it as another name.
// A leading byte-order mark is part of a name, not to be dropped.
const utf8Name = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Blobs stored; `rows` index them (generation_artifacts), to be inserted once every one is in. */
export interface StoredOutputs {
  files: number;
  bytes: number;
  /** Bytes that were not in the store yet. */
  newBytes: number;
  rows: ArtifactRow[];
}

/**
 * Stores a generation's files (`sources`, as the worker holds them) and the bundle under
 * `bundleDir` (none without), which has no link on the way to it (directoryInside); inserts nothing: the caller records `rows` (the worker, in the
 * transaction that marks the generation SUCCEEDED).
 */
export async function storeOutputs(
  store: BlobStore,
  generationId: string,
  bundleDir: string | undefined,
  sources: readonly { path: string; content: string; sha256?: string }[],
  signal?: AbortSignal,
): Promise<StoredOutputs> {
  // Checked whole before anything is stored, so a refused bundle leaves no blobs behind.
  const bundle = bundleDir ? await bundleFiles(bundleDir) : [];
  const stored: StoredOutputs = { files: 0, bytes: 0, newBytes: 0, rows: [] };
  let batch: (BlobBytes & Pick<ArtifactRow, 'kind' | 'path'>)[] = [];
  let batchBytes = 0;
  const flush = async () => {
    // A run stopped meanwhile stores nothing more: what is stored already is collected as unused.
    signal?.throwIfAborted();
    const blobs = batch;
    batch = [];
    batchBytes = 0;
    const isNew = await store.putMany(blobs);
    blobs.forEach(({ kind, path, sha256, content }, i) => {
      if (isNew[i]) stored.newBytes += content.length;
      stored.files++;
      stored.bytes += content.length;
      stored.rows.push({ generationId, kind, path, sha256, size: content.length });
    });
  };
  const put = async (kind: ArtifactRow['kind'], path: string, content: Buffer, sha256 = sha256Of(content)) => {
    batch.push({ kind, path, sha256, content });
    batchBytes += content.length;
    if (batch.length >= BATCH_FILES || batchBytes >= BATCH_BYTES) await flush();
  };
  for (const file of sources) await put('SOURCE', file.path, Buffer.from(file.content, 'utf8'), file.sha256);
  for (const file of bundle) await put('BUNDLE', file.path, await readBundleFile(file));
  if (batch.length > 0) await flush();
  return stored;
}

/** The target's bundle folder (`bundleDir`, relative) in a built workspace, for storeOutputs: undefined when there is none (see directoryInside). */
export function bundleFolderIn(workspaceDir: string, bundleDir: string): Promise<string | undefined> {
  return directoryInside(workspaceDir, bundleDir).catch(refuseUnreadable(bundleDir));
}

interface BundleFile {
  /** Relative to the bundle folder, as the manifest names it. */
  path: string;
  file: string;
  size: number;
}

/**
 * Regular files under the bundle folder, as paths relative to it, within the bundle limits.
 * The build ran untrusted code, so links are never followed: a symlink to /etc/passwd stays behind.
 */
async function bundleFiles(root: string): Promise<BundleFile[]> {
  if (!(await lstat(root).catch(ignoreMissing).catch(refuseUnreadable('.')))?.isDirectory()) return [];
  const files: BundleFile[] = [];
  let entryCount = 0;
  let bytes = 0;
  let pathBytes = 0;
  const walk = async (dir: string, prefix: string) => {
    // Listed one entry at a time: a folder of millions stops at the limit, not in memory.
    // (@types/node leaves 'buffer' out of opendir's encodings; Node takes it, as readdir's.)
    const opened = (await opendir(dir, { encoding: 'buffer' as BufferEncoding }).catch(refuseUnreadable(prefix || '.'))) as unknown as AsyncIterable<Dirent<Buffer>>;
    const listed: Dirent<Buffer>[] = [];
    for await (const entry of opened) {
      if (++entryCount > MAX_BUNDLE_ENTRIES) throw tooLarge(`over ${MAX_BUNDLE_ENTRIES} entries (files, folders and links)`);
      listed.push(entry);
    }
    // Links and other entries are left behind, whatever their names.
    const entries = listed.filter((entry) => entry.isDirectory() || entry.isFile()).map((entry) => ({ entry, name: nameOf(entry.name, prefix) }));
    for (const { entry, name } of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = prefix ? `${prefix}/${name}` : name;
      const length = Buffer.byteLength(path);
      if (length > MAX_BUNDLE_PATH_BYTES) throw tooLarge(`the path ${describePath(path)} is over ${MAX_BUNDLE_PATH_BYTES} bytes`);
      const file = join(dir, name);
      if (entry.isDirectory()) {
        await walk(file, path);
        continue;
      }
      const { size } = await lstat(file).catch(refuseUnreadable(path));
      if (size > MAX_BUNDLE_FILE_BYTES) throw tooLarge(`${describePath(path)} is over ${megabytes(MAX_BUNDLE_FILE_BYTES)}`);
      files.push({ path, file, size });
      bytes += size;
      pathBytes += length;
      if (bytes > MAX_BUNDLE_BYTES) throw tooLarge(`over ${megabytes(MAX_BUNDLE_BYTES)}`);
      if (pathBytes > MAX_BUNDLE_PATHS_BYTES) throw tooLarge(`its paths are over ${megabytes(MAX_BUNDLE_PATHS_BYTES)} in all`);
    }
  };
  await walk(root, '');
  return files;
}

/** A bundle entry's name, refused unless it is UTF-8. */
function nameOf(name: Buffer, prefix: string): string {
  try {
    return utf8Name.decode(name);
  } catch {
    const path = prefix ? `${prefix}/${name.toString('utf8')}` : name.toString('utf8');
    throw new BundleRefusedError(`The web bundle holds a file name that is not UTF-8: ${describePath(path)}.`);
  }
}

/** At most the size checked, whatever happened to the file since; a link put in its place is refused. */
async function readBundleFile({ path, file, size }: BundleFile): Promise<Buffer> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch(refuseUnreadable(path));
  try {
    const content = Buffer.alloc(size);
    const { bytesRead } = await handle.read(content, 0, size, 0);
    return content.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function megabytes(bytes: number): string {
  return `${bytes / 1024 / 1024} MB`;
}
