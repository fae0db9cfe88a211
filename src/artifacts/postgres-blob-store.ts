import { and, asc, eq, gt, inArray, lt, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { artifactBlobs, generationArtifacts } from '../db/schema.js';
import { serviceScope } from '../db/scope.js';
import { BlobGoneError, type BlobStore, assertSha256, putDistinct } from './blob-store.js';
import type { LocalBlobCache } from './local-cache.js';

const LIST_BATCH = 1000;
/**
 * Bytes per statement of a read in slices: a bytea travels as hex, twice its size and more. Not
 * smaller: PostgreSQL keeps a large value compressed, and each slice decompresses the value up
 * to its end, so a 64 MiB blob read in 8 slices decompresses ~4.5 times its size (in 1 MiB
 * slices, ~32 times); most bundle files are one slice.
 */
export const SLICE_BYTES = 8 * 1024 * 1024;

/** Blobs in the artifact_blobs table: every instance on the database sees them, no other service needed. */
export function postgresBlobStore(db: Db, cache: LocalBlobCache, options: { sliceBytes?: number } = {}): BlobStore {
  const scope = serviceScope(db);
  const sliceBytes = Math.max(1, options.sliceBytes ?? SLICE_BYTES);
  const read = async (sha256: string) => {
    const [row] = await scope.run((tx) =>
      tx.select({ content: artifactBlobs.content }).from(artifactBlobs).where(eq(artifactBlobs.sha256, assertSha256(sha256))),
    );
    return row ? Buffer.from(row.content) : undefined;
  };
  // Its size first, then a statement per slice, each asked for as the previous is taken: a
  // slice in memory at a time. A row gone between them (collected) ends it with BlobGoneError.
  const readSlices = async (sha256: string) => {
    const where = eq(artifactBlobs.sha256, assertSha256(sha256));
    const [row] = await scope.run((tx) => tx.select({ size: artifactBlobs.size }).from(artifactBlobs).where(where));
    if (!row) return undefined;
    const size = row.size;
    return (async function* () {
      for (let offset = 0; offset < size; offset += sliceBytes) {
        const [slice] = await scope.run((tx) =>
          tx
            .select({ bytes: sql<Uint8Array>`substring(${artifactBlobs.content} from ${offset + 1} for ${sliceBytes})` })
            .from(artifactBlobs)
            .where(where),
        );
        if (!slice) throw new BlobGoneError(sha256);
        yield slice.bytes;
      }
    })();
  };
  return {
    kind: 'postgres',
    // One statement for them all. Its rows are in sha256 order: two runs storing the same
    // blobs take their row locks in the same order, so neither waits for the other in a
    // cycle (and `remove` skips the rows a store holds).
    putMany: (blobs) =>
      putDistinct(blobs, async (distinct) => {
        const rows = distinct
          .map(({ sha256, content }) => ({ sha256, size: content.length, content }))
          .sort((a, b) => (a.sha256 < b.sha256 ? -1 : 1));
        const returned = await scope.run((tx) =>
          tx
            .insert(artifactBlobs)
            .values(rows)
            // created_at doubles as "last deduplicated against", so collection spares it.
            .onConflictDoUpdate({ target: artifactBlobs.sha256, set: { createdAt: sql`now()` } })
            .returning({ sha256: artifactBlobs.sha256, inserted: sql<boolean>`xmax = 0` }),
        );
        return returned.filter((row) => row.inserted).map((row) => row.sha256);
      }),
    read,
    readSlices,
    localPath: (sha256, generationId) => cache.path(sha256, () => readSlices(sha256), generationId),
    async *list() {
      let after = '';
      for (;;) {
        const rows = await scope.run((tx) =>
          tx
            .select({ sha256: artifactBlobs.sha256, touchedAt: artifactBlobs.createdAt })
            .from(artifactBlobs)
            .where(gt(artifactBlobs.sha256, after))
            .orderBy(asc(artifactBlobs.sha256))
            .limit(LIST_BATCH),
        );
        if (rows.length === 0) return;
        yield rows;
        after = rows.at(-1)!.sha256;
      }
    },
    async remove(sha256s, before) {
      if (sha256s.length === 0) return 0;
      const removed = await scope.run((tx) => {
        // A row that a store is writing is skipped, never waited for: the store locks its
        // batch in sha256 order, a delete in its own order, and each would wait on the other.
        // The store touches it anyway, so it is young again.
        const orphans = tx
          .select({ sha256: artifactBlobs.sha256 })
          .from(artifactBlobs)
          .where(
            and(
              inArray(artifactBlobs.sha256, sha256s),
              lt(artifactBlobs.createdAt, before),
              sql`not exists (select 1 from ${generationArtifacts} where ${generationArtifacts.sha256} = ${artifactBlobs.sha256})`,
            ),
          )
          .for('update', { skipLocked: true });
        return tx
          .delete(artifactBlobs)
          .where(and(inArray(artifactBlobs.sha256, orphans), lt(artifactBlobs.createdAt, before)))
          .returning({ sha256: artifactBlobs.sha256 });
      });
      return removed.length;
    },
  };
}
