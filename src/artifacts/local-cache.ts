import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { TIMED_OUT, within } from '../deadlines.js';
import { ignoreMissing } from '../workspace/write-inside.js';
import { BlobGoneError, assertSha256 } from './blob-store.js';

/** Remote reads under way at once, by default: each holds a slice, a connection and a turn the others wait for. */
export const REMOTE_READS_AT_ONCE = 2;
/** How long a download may wait for its next piece before it gives its turn up and fails: a stalled body must not hold one of the few turns. */
export const PIECE_TIMEOUT_MS = 30_000;

/**
 * Local copies of remote blobs (postgres, Supabase Storage) under DATA_DIR, so the
 * preview handler can serve them with `send` (ranges, conditional requests) from disk.
 * Blobs never change, so a copy is valid forever; `prune` drops copies unused for a
 * while. A use touches the copy's mtime, so validators come from the sha256, never from it.
 * A download writes the blob as the store reads it (a slice at a time with `readSlices`); at
 * most `remoteReads` run at once, the others wait their turn in the order they came, and one
 * whose store sends nothing for `pieceTimeoutMs` fails and frees its turn. The copy
 * takes its name only once its bytes match their sha256; a failed download leaves no file.
 */
export function localBlobCache(
  dir: string,
  options: {
    remoteReads?: number;
    pieceTimeoutMs?: number;
    /** Told each time a download has to wait for a turn, with how many wait now (for a log line). */
    onWaiting?: (waiting: number) => void;
  } = {},
) {
  const pathOf = (sha256: string) => join(dir, assertSha256(sha256));
  const pending = new Map<string, Promise<string | undefined>>();
  const inTurn = turns(Math.max(1, options.remoteReads ?? REMOTE_READS_AT_ONCE), options.onWaiting);
  const pieceTimeoutMs = options.pieceTimeoutMs ?? PIECE_TIMEOUT_MS;
  return {
    /**
     * The copy's path, downloaded first through `fetch` unless present: a piece at a time (a
     * store's `readSlices`), written to the copy as they come.
     */
    async path(sha256: string, fetch: () => Promise<AsyncIterable<Uint8Array> | undefined>): Promise<string | undefined> {
      const target = pathOf(sha256);
      const now = new Date();
      if (await utimes(target, now, now).then(() => true, ignoreMissing)) return target;
      // Requests for the same blob at once share one download.
      let download = pending.get(sha256);
      if (!download) {
        // The turn lasts until the bytes are on disk, or until the store stalls.
        download = inTurn(async () => {
          const content = await fetch();
          if (!content) return undefined;
          const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
          try {
            await writeVerified(tmp, sha256, content[Symbol.asyncIterator](), pieceTimeoutMs);
            await rename(tmp, target);
            return target;
          } catch (error) {
            await rm(tmp, { force: true });
            // Gone while it was read (collected): as if it had been gone before.
            if (error instanceof BlobGoneError) return undefined;
            throw error;
          }
        }).finally(() => pending.delete(sha256));
        pending.set(sha256, download);
      }
      return download;
    },
    /** Removes the copies of blobs the store no longer has. */
    async drop(sha256s: string[]): Promise<void> {
      for (const sha256 of sha256s) await rm(pathOf(sha256), { force: true });
    },
    /** Removes copies not used since `before`. */
    async prune(before: Date): Promise<void> {
      for (const name of (await readdir(dir).catch(ignoreMissing)) ?? []) {
        const stats = await stat(join(dir, name)).catch(ignoreMissing);
        if (stats && stats.mtime < before) await rm(join(dir, name), { force: true });
      }
    },
  };
}

/**
 * Writes the pieces to a new file `tmp` as they come; throws unless they are the blob named
 * `sha256`, or when the next piece takes longer than `pieceTimeoutMs`. Whichever way it fails,
 * the pieces are let go (a body's connection closed).
 */
async function writeVerified(tmp: string, sha256: string, pieces: AsyncIterator<Uint8Array>, pieceTimeoutMs: number): Promise<void> {
  const hash = createHash('sha256');
  let done = false;
  try {
    await mkdir(dirname(tmp), { recursive: true });
    const file = await open(tmp, 'wx');
    try {
      for (;;) {
        const step = await within(pieces.next(), pieceTimeoutMs);
        if (step === TIMED_OUT) throw new Error(`Blob ${sha256}: no data from the store for ${pieceTimeoutMs / 1000} s`);
        if (step.done) break;
        hash.update(step.value);
        await file.write(step.value);
      }
      done = true;
    } finally {
      await file.close();
    }
  } finally {
    // Not awaited: a stalled read may never settle, and its turn must not wait for it.
    if (!done) void pieces.return?.()?.catch(() => undefined);
  }
  const written = hash.digest('hex');
  if (written !== sha256) throw new Error(`Blob ${sha256} read as bytes whose sha256 is ${written}`);
}

export type LocalBlobCache = ReturnType<typeof localBlobCache>;

/** Runs at most `limit` tasks at once; the others start in the order they were given, as turns free up. */
function turns(limit: number, onWaiting?: (waiting: number) => void) {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= limit) {
      const turn = new Promise<void>((resolve) => waiting.push(resolve));
      onWaiting?.(waiting.length);
      await turn;
    } else running++;
    try {
      return await task();
    } finally {
      // The turn passes straight to the next in line (`running` unchanged), or frees up.
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}
