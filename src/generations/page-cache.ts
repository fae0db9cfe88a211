// Full pages of a generation's persisted rows (chunks, build-log lines), shared by the
// streams of this process: when hundreds of viewers join one generation, its history is
// read from the database once, not once per viewer. A row never changes once written
// and seqs are contiguous, so a full page after a given seq is final; a short page (the
// end of what is written so far) is never kept. Each stream has authorised its viewer
// (RLS, in its own transaction) before it asks; whoever may see a generation may see
// all its rows.

/** Pages kept at most (a page is at most ~1.6 MiB, typically ~20 KiB). */
const MAX_PAGES = 256;
/** How long a page is kept after it was read. */
const TTL_MS = 30_000;

export interface PageCache<T> {
  /** The full page of `generationId`'s rows after `afterSeq`, if one was read lately. */
  get(generationId: string, afterSeq: number): T[] | undefined;
  /** Keeps `rows` if it is a full page. */
  put(generationId: string, afterSeq: number, rows: T[]): void;
}

export function createPageCache<T>(pageSize: number, now: () => number = Date.now): PageCache<T> {
  const pages = new Map<string, { rows: T[]; until: number }>();
  const key = (generationId: string, afterSeq: number) => `${generationId}:${afterSeq}`;
  return {
    get(generationId, afterSeq) {
      const k = key(generationId, afterSeq);
      const page = pages.get(k);
      if (!page) return undefined;
      if (page.until <= now()) {
        pages.delete(k);
        return undefined;
      }
      return page.rows;
    },
    put(generationId, afterSeq, rows) {
      if (rows.length !== pageSize) return;
      const k = key(generationId, afterSeq);
      pages.delete(k);
      pages.set(k, { rows, until: now() + TTL_MS });
      // The oldest go first (a Map iterates in insertion order).
      for (const oldest of pages.keys()) {
        if (pages.size <= MAX_PAGES) break;
        pages.delete(oldest);
      }
    },
  };
}
