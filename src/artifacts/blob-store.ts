import { createHash } from 'node:crypto';

// Content-addressed blobs: the key is the lowercase hex sha256 of the bytes, so a file
// that several generations share (follow-ups change little) is stored once.

export interface StoredBlob {
  sha256: string;
  /** When it was written or last deduplicated against: collection spares younger blobs. */
  touchedAt: Date;
}

/** Bytes and their sha256, as they are stored. */
export interface BlobBytes {
  sha256: string;
  content: Buffer;
}

export interface BlobStore {
  readonly kind: 'fs' | 'postgres' | 'supabase';
  /**
   * Stores each blob under its sha256 unless present (equal ones once); for each, true
   * when it was new (of equal ones, the first only).
   */
  putMany(blobs: readonly BlobBytes[]): Promise<boolean[]>;
  /** The bytes, or undefined when no such blob exists. */
  read(sha256: string): Promise<Buffer | undefined>;
  /**
   * The bytes a piece at a time, each asked for as the previous is taken, or undefined when
   * no such blob exists: a reader holds a piece, never the blob (remote stores, for the
   * local cache's downloads). A blob that goes while it is read ends it with `BlobGoneError`.
   */
  readSlices?(sha256: string): Promise<AsyncIterable<Uint8Array> | undefined>;
  /**
   * A local file holding the bytes (fs: the blob itself; otherwise a cached copy), or undefined.
   * `generationId` is whose preview asks: remote stores' downloads take turns by generation.
   */
  localPath(sha256: string, generationId?: string): Promise<string | undefined>;
  /** Every blob, in batches, for collection. */
  list(): AsyncIterable<StoredBlob[]>;
  /** Removes blobs still untouched since `before` (one deduplicated meanwhile stays). */
  remove(sha256s: string[], before: Date): Promise<number>;
}

/** The blob went while it was being read (collected): it is no longer there to read. */
export class BlobGoneError extends Error {
  constructor(sha256: string) {
    super(`Blob ${sha256} went while it was being read`);
    this.name = 'BlobGoneError';
  }
}

export const SHA256 = /^[0-9a-f]{64}$/;

export function sha256Of(content: Buffer | string): string {
  return createHash('sha256').update(content).digest('hex');
}

export function assertSha256(sha256: string): string {
  if (!SHA256.test(sha256)) throw new Error(`Not a sha256: ${JSON.stringify(sha256)}`);
  return sha256;
}

/**
 * `putMany` over a store's own way of putting distinct blobs (`store` resolves to the
 * sha256s that were new): equal blobs are put once, and only the first of them is new.
 */
export async function putDistinct(blobs: readonly BlobBytes[], store: (distinct: BlobBytes[]) => Promise<Iterable<string>>): Promise<boolean[]> {
  const distinct = [...new Map(blobs.map((blob) => [assertSha256(blob.sha256), blob])).values()];
  const added = new Set(distinct.length > 0 ? await store(distinct) : []);
  return blobs.map(({ sha256 }) => added.delete(sha256));
}

/**
 * `putMany` for a store that puts one blob at a time: equal blobs once, a few at a time (a
 * remote store is a round trip each). After a failure no other starts, and it rejects
 * once every put under way has ended.
 */
export function putOneByOne(put: (blob: BlobBytes) => Promise<boolean>, parallel = 4): BlobStore['putMany'] {
  return (blobs) => putDistinct(blobs, (distinct) => putEach(distinct, put, parallel));
}

/** Resolves to the sha256s that were new. */
async function putEach(blobs: readonly BlobBytes[], put: (blob: BlobBytes) => Promise<boolean>, parallel: number): Promise<string[]> {
  const added: string[] = [];
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < blobs.length) {
      const blob = blobs[next++]!;
      try {
        if (await put(blob)) added.push(blob.sha256);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, blobs.length) }, worker));
  if (failure) throw failure.error;
  return added;
}
