import { constants } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ignoreMissing } from '../workspace/write-inside.js';
import { type BlobBytes, type BlobStore, sha256Of } from './blob-store.js';
import type { ArtifactRow } from './manifest-store.js';

// A generation's outputs go to the store before it is marked SUCCEEDED: its files
// (Generation.files) as SOURCE, and the web bundle its build produced as BUNDLE.

const MAX_BUNDLE_FILES = 10_000;
const MAX_BUNDLE_BYTES = 256 * 1024 * 1024;
// Blobs go to the store in batches of about this many files or bytes: one statement each on
// PostgreSQL, where a statement per blob was a round trip each.
const BATCH_FILES = 100;
const BATCH_BYTES = 4 * 1024 * 1024;

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
): Promise<StoredOutputs> {
  const stored: StoredOutputs = { files: 0, bytes: 0, newBytes: 0, rows: [] };
  let batch: (BlobBytes & Pick<ArtifactRow, 'kind' | 'path'>)[] = [];
  let batchBytes = 0;
  const flush = async () => {
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
  if (bundleDir) for await (const file of bundleFiles(bundleDir)) await put('BUNDLE', file.path, file.content);
  if (batch.length > 0) await flush();
  return stored;
}

/**
 * Regular files under the bundle folder, as paths relative to it. The build ran
 * untrusted code, so links are never followed: a symlink to /etc/passwd stays behind.
 */
async function* bundleFiles(root: string): AsyncGenerator<{ path: string; content: Buffer }> {
  if (!(await lstat(root).catch(ignoreMissing))?.isDirectory()) return;
  let count = 0;
  let bytes = 0;
  const walk = async function* (dir: string, prefix: string): AsyncGenerator<{ path: string; content: Buffer }> {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      const path = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) yield* walk(join(dir, entry.name), path);
      if (!entry.isFile()) continue;
      const handle = await open(join(dir, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        // Checked before reading: a build could leave a file of any size.
        count++;
        bytes += (await handle.stat()).size;
        if (count > MAX_BUNDLE_FILES || bytes > MAX_BUNDLE_BYTES) {
          throw new Error(`The web bundle is too large to keep (over ${MAX_BUNDLE_FILES} files or ${MAX_BUNDLE_BYTES / 1024 / 1024} MB).`);
        }
        yield { path, content: await handle.readFile() };
      } finally {
        await handle.close();
      }
    }
  };
  yield* walk(root, '');
}
