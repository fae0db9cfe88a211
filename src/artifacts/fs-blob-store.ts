import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ignoreMissing } from '../workspace/write-inside.js';
import { type BlobBytes, type BlobStore, type StoredBlob, SHA256, assertSha256, putOneByOne } from './blob-store.js';

/** Blobs as files `<dir>/<first two hex>/<sha256>` (the embedded default, under DATA_DIR). */
export function fsBlobStore(dir: string): BlobStore {
  const shardOf = (sha256: string) => join(dir, assertSha256(sha256).slice(0, 2));
  const pathOf = (sha256: string) => join(shardOf(sha256), sha256);
  /** A name beside the blob that `list` never shows: for writing it, or for moving it aside. */
  const tmpOf = (sha256: string) => join(shardOf(sha256), `.tmp-${randomBytes(6).toString('hex')}`);
  const put = async ({ sha256, content }: BlobBytes) => {
    const target = pathOf(sha256);
    const now = new Date();
    // Touching an existing blob keeps a concurrent collection from taking it.
    if (await utimes(target, now, now).then(() => true, ignoreMissing)) return false;
    await mkdir(shardOf(sha256), { recursive: true });
    const tmp = tmpOf(sha256);
    await writeFile(tmp, content);
    await rename(tmp, target); // atomic: a reader sees the whole blob or none
    return true;
  };
  return {
    kind: 'fs',
    putMany: putOneByOne(put),
    read: (sha256) => readFile(pathOf(sha256)).catch(ignoreMissing),
    // The blob itself; a missing one is the reader's 404 (no extra stat on the preview's hot path).
    localPath: async (sha256) => pathOf(sha256),
    async *list() {
      const shards = (await readdir(dir).catch(ignoreMissing)) ?? [];
      for (const shard of shards.filter((name) => /^[0-9a-f]{2}$/.test(name)).sort()) {
        const batch: StoredBlob[] = [];
        for (const name of await readdir(join(dir, shard)).catch(ignoreMissing) ?? []) {
          if (!SHA256.test(name)) continue;
          const stats = await stat(join(dir, shard, name)).catch(ignoreMissing);
          if (stats) batch.push({ sha256: name, touchedAt: stats.mtime });
        }
        if (batch.length > 0) yield batch;
      }
    },
    async remove(sha256s, before) {
      let removed = 0;
      for (const sha256 of sha256s) {
        // Moved aside before its age is read: a store that touches it later finds none and
        // writes it again; one that touched it earlier shows in the age, and it goes back.
        // (Read in place, a touch between the read and the removal lost a blob in use.)
        const target = pathOf(sha256);
        const aside = tmpOf(sha256);
        if (!(await rename(target, aside).then(() => true, ignoreMissing))) continue;
        if ((await stat(aside)).mtime >= before) {
          await rename(aside, target);
          continue;
        }
        await rm(aside, { force: true });
        removed++;
      }
      return removed;
    },
  };
}
