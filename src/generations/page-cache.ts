// Pages of a generation's persisted rows (chunks, build-log lines), shared by the streams
// of this process: when hundreds of viewers join one generation, its history is read
// from the database once, not once per viewer. A row never changes once written and
// seqs are contiguous, so a full page after a given seq is final and serves anyone.
// A short page (the end of what is written so far) grows: it serves only a stream that
// asks for what a read begun after a given moment saw (see streams.ts), for a few
// seconds, and a later read of it replaces it. Each stream has authorised its viewer
// (RLS, in its own transaction) before it asks; whoever may see a generation may see all
// its rows. An empty page is never kept: it is also what the member reads give a viewer
// who has lost access, which must not pass for the end of the history.

/** Pages kept at most (a page is at most ~1.6 MiB, typically ~20 KiB). */
const MAX_PAGES = 256;
/** How long a page is kept after it was read: a full one, a short one (useful while viewers join or repair at once). */
const TTL_MS = 30_000;
const SHORT_TTL_MS = 2000;

export interface PageCache<T> {
  /**
   * `generationId`'s rows after `afterSeq` if a page of them was read lately: a full
   * page; or, given `readSince` (a `performance.now()`), a short one whose read began
   * at or after that moment.
   */
  get(generationId: string, afterSeq: number, readSince?: number): T[] | undefined;
  /** Keeps `rows` (unless empty), read by a query begun at `readAt` (a `performance.now()`). */
  put(generationId: string, afterSeq: number, rows: T[], readAt: number): void;
}

interface Page<T> {
  rows: T[];
  readAt: number;
  until: number;
}

export function createPageCache<T>(pageSize: number, now: () => number = Date.now): PageCache<T> {
  const pages = new Map<string, Page<T>>();
  const key = (generationId: string, afterSeq: number) => `${generationId}:${afterSeq}`;
  return {
    get(generationId, afterSeq, readSince) {
      const k = key(generationId, afterSeq);
      const page = pages.get(k);
      if (!page) return undefined;
      if (page.until <= now()) {
        pages.delete(k);
        return undefined;
      }
      if (page.rows.length === pageSize || (readSince !== undefined && page.readAt >= readSince)) return page.rows;
      return undefined;
    },
    put(generationId, afterSeq, rows, readAt) {
      if (rows.length === 0) return;
      const k = key(generationId, afterSeq);
      const kept = pages.get(k);
      // A full page is final; a short one gives way only to a later read.
      if (kept && kept.until > now() && (kept.rows.length === pageSize || kept.readAt > readAt)) return;
      pages.delete(k);
      pages.set(k, { rows, readAt, until: now() + (rows.length === pageSize ? TTL_MS : SHORT_TTL_MS) });
      // The oldest go first (a Map iterates in insertion order).
      for (const oldest of pages.keys()) {
        if (pages.size <= MAX_PAGES) break;
        pages.delete(oldest);
      }
    },
  };
}
