import { createHash } from 'node:crypto';

// Content-addressed blobs: the key is the lowercase hex sha256 of the bytes, so a file
// that several generations share (follow-ups change little) is stored once.

export interface StoredBlob {
  sha256: string;
  /** When it was written or last deduplicated against: collection spares younger blobs. */
  touchedAt: Date;
}

export interface BlobStore {
  readonly kind: 'fs' | 'postgres' | 'supabase';
  /** Stores the bytes under their sha256 unless present; true when they were new. */
  put(sha256: string, content: Buffer): Promise<boolean>;
  /** The bytes, or undefined when no such blob exists. */
  read(sha256: string): Promise<Buffer | undefined>;
  /** A local file holding the bytes (fs: the blob itself; otherwise a cached copy), or undefined. */
  localPath(sha256: string): Promise<string | undefined>;
  /** Every blob, in batches, for collection. */
  list(): AsyncIterable<StoredBlob[]>;
  /** Removes blobs still untouched since `before` (one deduplicated meanwhile stays). */
  remove(sha256s: string[], before: Date): Promise<number>;
}

export const SHA256 = /^[0-9a-f]{64}$/;

export function sha256Of(content: Buffer | string): string {
  return createHash('sha256').update(content).digest('hex');
}

export function assertSha256(sha256: string): string {
  if (!SHA256.test(sha256)) throw new Error(`Not a sha256: ${JSON.stringify(sha256)}`);
  return sha256;
}
