import { createClient } from '@supabase/supabase-js';
import { type BlobBytes, type BlobStore, type StoredBlob, SHA256, assertSha256, putOneByOne } from './blob-store.js';
import type { LocalBlobCache } from './local-cache.js';

const LIST_BATCH = 1000;

export interface SupabaseStorageOptions {
  url: string;
  serviceRoleKey: string;
  bucket: string;
}

/**
 * Blobs as objects named by their sha256 in a private Supabase Storage bucket, through
 * supabase-js with the service role key (never a user's token: requests reach blobs
 * only through Kiln's signed URLs).
 */
export async function supabaseBlobStore(options: SupabaseStorageOptions, cache: LocalBlobCache): Promise<BlobStore> {
  const storage = createClient(options.url, options.serviceRoleKey, {
    auth: { persistSession: false, autoRefreshToken: false },
  }).storage;
  const created = await storage.createBucket(options.bucket, { public: false });
  if (created.error && !/already exists|duplicate/i.test(created.error.message)) {
    throw new Error(`Supabase Storage: cannot create the bucket ${options.bucket}: ${created.error.message}`);
  }
  const bucket = () => storage.from(options.bucket);
  const read = async (sha256: string) => {
    const data = downloaded(sha256, await bucket().download(assertSha256(sha256)));
    return data && Buffer.from(await data.arrayBuffer());
  };
  // The response body as it arrives, never whole in memory.
  const readSlices = async (sha256: string) =>
    downloaded(sha256, await bucket().download(assertSha256(sha256)).asStream()) as ReadableStream<Uint8Array> | undefined;
  const put = async ({ sha256, content }: BlobBytes) => {
    const { error } = await bucket().upload(assertSha256(sha256), content, {
      upsert: false,
      contentType: 'application/octet-stream',
    });
    if (!error) return true;
    if (/already exists|duplicate/i.test(error.message) || statusOf(error) === 409) return false;
    throw new Error(`Supabase Storage: cannot write blob ${sha256}: ${error.message}`);
  };
  return {
    kind: 'supabase',
    putMany: putOneByOne(put),
    read,
    readSlices,
    localPath: (sha256, generationId) => cache.path(sha256, () => readSlices(sha256), generationId),
    // Every page before the first batch: collection removes each batch's orphans before it asks
    // for the next, and a page at an offset of a listing that shrank meanwhile would skip as many
    // names (Storage's list pages by offset only). A name and a date per blob in memory.
    async *list() {
      const blobs: StoredBlob[] = [];
      for (let offset = 0; ; offset += LIST_BATCH) {
        const { data, error } = await bucket().list('', { limit: LIST_BATCH, offset, sortBy: { column: 'name', order: 'asc' } });
        if (error) throw new Error(`Supabase Storage: cannot list blobs: ${error.message}`);
        for (const object of data) {
          if (SHA256.test(object.name)) blobs.push({ sha256: object.name, touchedAt: new Date(object.updated_at ?? object.created_at ?? 0) });
        }
        if (data.length < LIST_BATCH) break;
      }
      for (let start = 0; start < blobs.length; start += LIST_BATCH) yield blobs.slice(start, start + LIST_BATCH);
    },
    async remove(sha256s) {
      if (sha256s.length === 0) return 0;
      const { data, error } = await bucket().remove(sha256s.map(assertSha256));
      if (error) throw new Error(`Supabase Storage: cannot remove blobs: ${error.message}`);
      return data.length;
    },
  };
}

function statusOf(error: object): number | undefined {
  return 'status' in error && typeof error.status === 'number' ? error.status : undefined;
}

/** A download's data, undefined when there is no such blob; any other error fails the read. */
function downloaded<T>(sha256: string, { data, error }: { data: T | null; error: { message: string } | null }): T | undefined {
  if (!error) return data ?? undefined;
  if (isNotFound(error)) return undefined;
  throw new Error(`Supabase Storage: cannot read blob ${sha256}: ${error.message}`);
}

function isNotFound(error: object): boolean {
  return statusOf(error) === 404 || ('statusCode' in error && String(error.statusCode) === '404') || /not found/i.test(String((error as Error).message));
}
