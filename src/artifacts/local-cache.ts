import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { TIMED_OUT, within } from '../deadlines.js';
import { ignoreMissing } from '../workspace/write-inside.js';
import { BlobGoneError, SHA256, assertSha256 } from './blob-store.js';

/** Remote reads under way at once, by default: each holds a slice, a connection and a turn the others wait for. */
export const REMOTE_READS_AT_ONCE = 2;
/** How long a download may wait for its next piece before it gives its turn up and fails: a stalled body must not hold one of the few turns. */
export const PIECE_TIMEOUT_MS = 30_000;
/**
 * Downloads one generation may have waiting for a turn, by default; past them a request is told
 * to come back (503), which a browser does not retry for a script. So it is far more than a
 * page's first requests, whatever proxy multiplexes them: the turns keep other previews going,
 * this only bounds what one generation's requests may hold.
 */
export const WAITING_PER_GENERATION = 1000;
/** What the copies may take on disk, by default: eight of the largest bundles a build may keep. */
export const CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024;

/** The generation has as many downloads waiting for a turn as it may: ask again shortly. */
export class DownloadsBusyError extends Error {
  constructor() {
    super('Too many downloads of this generation wait for a turn');
    this.name = 'DownloadsBusyError';
  }
}

/** What a prune removed, and what the copies left take. */
export interface Pruned {
  removed: number;
  bytes: number;
}

/**
 * Local copies of remote blobs (postgres, Supabase Storage) under DATA_DIR, so the
 * preview handler can serve them with `send` (ranges, conditional requests) from disk.
 * Blobs never change, so a copy is valid forever; `prune` drops copies unused for a
 * while, and the least recently used past `maxBytes`, which a download that crosses it
 * starts too. A use touches the copy's mtime (its order of use), so validators come from the
 * sha256, never from it.
 * A download writes the blob as the store reads it (a slice at a time with `readSlices`); at
 * most `remoteReads` run at once, the others wait their turn, in turns that go round the
 * generations asking (at most `waitingPerGeneration` waiting each), and one whose store sends
 * nothing for `pieceTimeoutMs` fails and frees its turn. The copy
 * takes its name only once its bytes match their sha256; a failed download leaves no file.
 */
export function localBlobCache(
  dir: string,
  options: {
    remoteReads?: number;
    waitingPerGeneration?: number;
    pieceTimeoutMs?: number;
    /** What the copies may take on disk; `CACHE_MAX_BYTES` unless given. */
    maxBytes?: number;
    /** Told what each prune removed (for a log line). */
    onPruned?: (pruned: Pruned) => void;
    /** Told each time a download has to wait for a turn, with how many wait now (for a log line). */
    onWaiting?: (waiting: number) => void;
  } = {},
) {
  const pathOf = (sha256: string) => join(dir, assertSha256(sha256));
  const pending = new Map<string, Promise<string | undefined>>();
  const inTurn = turns(Math.max(1, options.remoteReads ?? REMOTE_READS_AT_ONCE), options.waitingPerGeneration ?? WAITING_PER_GENERATION, options.onWaiting);
  const pieceTimeoutMs = options.pieceTimeoutMs ?? PIECE_TIMEOUT_MS;
  const maxBytes = options.maxBytes ?? CACHE_MAX_BYTES;
  // What the copies take, as of the last prune plus the downloads since; unknown until a prune.
  let bytes: number | undefined;

  /** Removes the copies unused since `before`, then the least recently used while they take more than `maxBytes`. */
  const sweep = async (before: Date | undefined): Promise<Pruned> => {
    const unusedBefore = before?.getTime() ?? -Infinity;
    const copies: { path: string; size: number; usedAt: number }[] = [];
    let removed = 0;
    for (const name of (await readdir(dir).catch(ignoreMissing)) ?? []) {
      const path = join(dir, name);
      const stats = await stat(path).catch(ignoreMissing);
      if (!stats) continue;
      if (SHA256.test(name)) copies.push({ path, size: stats.size, usedAt: stats.mtimeMs });
      else if (stats.mtimeMs < unusedBefore) {
        // A download's temporary file, as old as an unused copy: its process ended mid-download.
        await rm(path, { force: true });
        removed++;
      }
    }
    copies.sort((a, b) => a.usedAt - b.usedAt);
    let total = copies.reduce((sum, copy) => sum + copy.size, 0);
    // Down to a tenth below the bound, so that the next downloads do not each start a prune.
    const keep = total > maxBytes ? maxBytes - maxBytes / 10 : total;
    for (const copy of copies) {
      if (copy.usedAt >= unusedBefore && total <= keep) break;
      await rm(copy.path, { force: true });
      total -= copy.size;
      removed++;
    }
    bytes = total;
    const pruned = { removed, bytes: total };
    options.onPruned?.(pruned);
    return pruned;
  };
  // One prune at a time, in the order they were asked for.
  let sweeps: Promise<unknown> = Promise.resolve();
  const prune = (before?: Date): Promise<Pruned> => {
    const run = sweeps.then(() => sweep(before));
    sweeps = run.catch(() => undefined);
    return run;
  };
  let trimming = false;
  const grew = (size: number) => {
    if (bytes !== undefined) bytes += size;
    if (trimming || (bytes !== undefined && bytes <= maxBytes)) return;
    trimming = true;
    // Fails only with the disk, and the next prune on the timer tries again and says so.
    void prune()
      .catch(() => undefined)
      .finally(() => {
        trimming = false;
      });
  };
  return {
    /**
     * The copy's path, downloaded first through `fetch` unless present: a piece at a time (a
     * store's `readSlices`), written to the copy as they come, in a turn of `generationId`'s
     * (whose preview asks for it). Rejects with DownloadsBusyError when it has too many waiting.
     */
    async path(sha256: string, fetch: () => Promise<AsyncIterable<Uint8Array> | undefined>, generationId = ''): Promise<string | undefined> {
      const target = pathOf(sha256);
      const now = new Date();
      if (await utimes(target, now, now).then(() => true, ignoreMissing)) return target;
      // Requests for the same blob at once share one download.
      let download = pending.get(sha256);
      if (!download) {
        // The turn lasts until the bytes are on disk, or until the store stalls.
        download = inTurn(generationId, async () => {
          const content = await fetch();
          if (!content) return undefined;
          const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
          try {
            const size = await writeVerified(tmp, sha256, content[Symbol.asyncIterator](), pieceTimeoutMs);
            await rename(tmp, target);
            grew(size);
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
    /** Removes copies not used since `before` (none without it), then the least recently used past `maxBytes`. */
    prune,
  };
}

/**
 * Writes the pieces to a new file `tmp` as they come, and resolves to their size; throws unless
 * they are the blob named `sha256`, or when the next piece takes longer than `pieceTimeoutMs`.
 * Whichever way it fails, the pieces are let go (a body's connection closed).
 */
async function writeVerified(tmp: string, sha256: string, pieces: AsyncIterator<Uint8Array>, pieceTimeoutMs: number): Promise<number> {
  const hash = createHash('sha256');
  let size = 0;
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
        size += step.value.length;
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
  return size;
}

export type LocalBlobCache = ReturnType<typeof localBlobCache>;

/**
 * Runs at most `limit` tasks at once. The others wait in a queue per generation, at most
 * `waitingPerGeneration` each, and a freed turn goes round the generations: the one whose task
 * ended goes behind the others waiting, so one bundle's thousands of files wait behind each
 * other, never in front of another preview's first file.
 */
function turns(limit: number, waitingPerGeneration: number, onWaiting?: (waiting: number) => void) {
  let running = 0;
  let waiting = 0;
  // The generations waiting, in the order their turns come.
  const queues = new Map<string, (() => void)[]>();
  const passTurn = (ended: string) => {
    const own = queues.get(ended);
    if (own) {
      queues.delete(ended);
      queues.set(ended, own);
    }
    const [next] = queues;
    if (!next) {
      running--;
      return;
    }
    const [generationId, queue] = next;
    const start = queue.shift()!;
    if (queue.length === 0) queues.delete(generationId);
    waiting--;
    // The turn passes straight on (`running` unchanged).
    start();
  };
  return async <T>(generationId: string, task: () => Promise<T>): Promise<T> => {
    if (running >= limit) {
      const queue = queues.get(generationId) ?? [];
      if (queue.length >= waitingPerGeneration) throw new DownloadsBusyError();
      queues.set(generationId, queue);
      const turn = new Promise<void>((resolve) => queue.push(resolve));
      onWaiting?.(++waiting);
      await turn;
    } else running++;
    try {
      return await task();
    } finally {
      passTurn(generationId);
    }
  };
}
