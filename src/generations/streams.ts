import type { Scope } from '../db/scope.js';
import { NotFoundError } from '../errors.js';
import type { ChunkEvent, EventBus, LogLineEvent, StatusEvent } from '../events/bus.js';
import { generationReads } from './reads.js';
import { type GenerationRow, TERMINAL } from './store.js';

// Resumable streams: subscribe first, replay what is persisted after `afterSeq`, then
// go on live. Live batches that continue the sequence are passed straight through;
// anything else (a gap, a dropped event, a quiet spell) is repaired from the
// database, so a client sees every seq once, in order.

const PAGE = 500;
/** How long to wait for the bus before checking the database anyway. */
const REPAIR_INTERVAL_MS = 2000;
/** Live batches held while the consumer is busy; past this they are dropped and read back. */
const INBOX_LIMIT = 32;

export interface StreamOptions {
  scope: Scope;
  bus: EventBus;
  generationId: string;
  afterSeq?: number | null;
  signal?: AbortSignal;
}

export function generationChunks(options: StreamOptions): Promise<AsyncGenerator<ChunkEvent>> {
  return sequenced(options, 'generationChunks', (scope, id, after) => generationReads.chunksAfter(scope, id, after, PAGE), chunksAreOver);
}

export function buildLogs(options: StreamOptions): Promise<AsyncGenerator<LogLineEvent>> {
  return sequenced(options, 'buildLogs', (scope, id, after) => generationReads.logLinesAfter(scope, id, after, PAGE), (g) =>
    TERMINAL.includes(g.status),
  );
}

/** The current state first, then each change; completes after a terminal state. */
export async function generationUpdates(options: StreamOptions): Promise<AsyncGenerator<GenerationRow>> {
  const { scope, bus, generationId } = options;
  const inbox = new Inbox([bus.subscribe('generationUpdated', generationId)]);
  const first = await current(scope, generationId).catch(async (error: unknown) => {
    await inbox.close();
    throw error;
  });
  return (async function* () {
    try {
      let last = first;
      yield last;
      while (!TERMINAL.includes(last.status)) {
        await inbox.wait(REPAIR_INTERVAL_MS, options.signal);
        const next = await current(scope, generationId);
        if (next.status !== last.status || next.phase !== last.phase) yield next;
        last = next;
      }
    } finally {
      await inbox.close();
    }
  })();
}

function chunksAreOver(generation: GenerationRow): boolean {
  return TERMINAL.includes(generation.status) || (generation.status === 'RUNNING' && generation.phase !== 'GENERATING');
}

async function sequenced<T extends { seq: number }>(
  options: StreamOptions,
  topic: 'generationChunks' | 'buildLogs',
  readAfter: (scope: Scope, generationId: string, afterSeq: number) => Promise<T[]>,
  isOver: (generation: GenerationRow) => boolean,
): Promise<AsyncGenerator<T>> {
  const { scope, bus, generationId } = options;
  // Subscribe before the first read so nothing published meanwhile is missed.
  const inbox = new Inbox<T[] | StatusEvent>([
    bus.subscribe(topic, generationId) as AsyncIterable<T[]>,
    bus.subscribe('generationUpdated', generationId),
  ]);
  await current(scope, generationId).catch(async (error: unknown) => {
    await inbox.close();
    throw error;
  });
  return (async function* () {
    let last = options.afterSeq ?? -1;
    const fromDatabase = async function* () {
      for (let page = await readAfter(scope, generationId, last); page.length > 0; page = await readAfter(scope, generationId, last)) {
        for (const item of page) {
          last = item.seq;
          yield item;
        }
      }
    };
    try {
      yield* fromDatabase();
      for (;;) {
        if (isOver(await current(scope, generationId))) {
          // Everything of this part was persisted before the state moved on.
          yield* fromDatabase();
          return;
        }
        const batches = await inbox.wait(REPAIR_INTERVAL_MS, options.signal);
        let contiguous = true;
        for (const batch of batches) {
          if (!Array.isArray(batch)) continue;
          for (const item of batch) {
            if (item.seq <= last) continue;
            if (item.seq !== last + 1) {
              contiguous = false;
              break;
            }
            last = item.seq;
            yield item;
          }
        }
        if (!contiguous || inbox.overflowed()) yield* fromDatabase();
      }
    } finally {
      await inbox.close();
    }
  })();
}

async function current(scope: Scope, generationId: string): Promise<GenerationRow> {
  const [generation] = await generationReads.many(scope, [generationId]);
  if (!generation) throw new NotFoundError('Generation not found.');
  return generation;
}

/** Pumps bus subscriptions into a bounded buffer that a stream waits on. */
class Inbox<T> {
  private buffer: T[] = [];
  private dropped = false;
  private waiter: (() => void) | undefined;
  private readonly iterators: AsyncIterator<T>[];

  constructor(sources: AsyncIterable<T>[]) {
    this.iterators = sources.map((source) => source[Symbol.asyncIterator]());
    for (const iterator of this.iterators) void this.pump(iterator);
  }

  private async pump(iterator: AsyncIterator<T>) {
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      if (this.buffer.length >= INBOX_LIMIT) {
        this.buffer.shift();
        this.dropped = true;
      }
      this.buffer.push(next.value);
      this.waiter?.();
    }
  }

  /** What arrived since the last call; waits up to `timeoutMs` when nothing has. */
  async wait(timeoutMs: number, signal?: AbortSignal): Promise<T[]> {
    if (this.buffer.length === 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        signal?.addEventListener('abort', done, { once: true });
        this.waiter = done;
        function done() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.waiter = undefined;
    }
    signal?.throwIfAborted();
    const items = this.buffer;
    this.buffer = [];
    return items;
  }

  /** Whether live items were dropped since the last call (read them back from the database). */
  overflowed(): boolean {
    const dropped = this.dropped;
    this.dropped = false;
    return dropped;
  }

  async close() {
    this.waiter?.();
    await Promise.all(this.iterators.map((iterator) => iterator.return?.()));
  }
}
