import type { Logger } from '../observability/logger.js';

/**
 * Collects items and writes them in batches: at most every `intervalMs`, or at once
 * when `maxItems` are waiting. Writes run one after another, so order is kept; `add`
 * returns the pending write when the batch is full, which lets a fast producer wait.
 */
export class Batcher<T> {
  private items: T[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private failure: unknown;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly intervalMs = 50,
    private readonly maxItems = 500,
  ) {}

  add(item: T): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    this.items.push(item);
    if (this.items.length >= this.maxItems) return this.flush();
    this.timer ??= setTimeout(() => void this.flush().catch(() => {}), this.intervalMs);
    return undefined;
  }

  /** Writes what is waiting and resolves when every earlier write is done. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.items;
    this.items = [];
    this.writing = this.writing.then(async () => {
      if (this.failure) throw this.failure;
      if (batch.length === 0) return;
      try {
        await this.write(batch);
      } catch (error) {
        this.failure = error;
        throw error;
      }
    });
    return this.writing;
  }

  /**
   * Writes what is waiting once the work feeding it failed (the caller rethrows that
   * failure). A write that fails, now or an earlier batch's, is logged and never thrown in
   * the failure's place: a budget stop or an invalid answer during a database outage still
   * ends as what it was.
   */
  async flushAfterFailure(log: Logger): Promise<void> {
    await this.flush().catch((error: unknown) => log.warn({ err: error }, 'keeping what came before the failure failed'));
  }

  /**
   * Waits for the writes under way, then hands back what is still waiting instead of
   * writing it: the caller writes it together with other work, in one transaction.
   */
  async drain(): Promise<T[]> {
    for (let writing = this.writing; ; writing = this.writing) {
      await writing;
      if (writing === this.writing) break; // no write was queued meanwhile
    }
    if (this.failure) throw this.failure;
    clearTimeout(this.timer);
    this.timer = undefined;
    const items = this.items;
    this.items = [];
    return items;
  }
}

/** Splits text into pieces of at most `max` UTF-16 units without cutting a surrogate pair. */
export function splitText(text: string, max: number): string[] {
  const pieces: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + max, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end -= 1;
    pieces.push(text.slice(start, end));
    start = end;
  }
  return pieces;
}
