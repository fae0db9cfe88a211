import type { Tx } from '../db/client.js';
import type { Scope } from '../db/scope.js';
import { Deadlines } from '../deadlines.js';
import { NotFoundError } from '../errors.js';
import { type ChunkEvent, type EventBus, isLossless, type LogLineEvent, type StatusEvent } from '../events/bus.js';
import { Inbox } from './inbox.js';
import { createPageCache, type PageCache } from './page-cache.js';
import { replayPause } from './replay-turns.js';
import { isTerminal } from './status.js';
import { type GenerationRow, generationStore } from './store.js';

// Resumable streams: subscribe first, replay what is persisted after `afterSeq`, then
// go on live. Live batches that continue the sequence are passed straight through;
// anything else (a gap, a dropped event, a quiet spell) is repaired from the
// database, so a client sees every seq once, in order.
//
// The database is read at the start (which also authorises: RLS decides whether the
// generation exists for this viewer), on a gap or an overflow, when the bus has been
// quiet for a while, and once more at the end. Live batches and status changes come
// from the bus alone, so fanning one generation out to many subscribers costs no
// query per batch and subscriber.
//
// Backpressure: the transports pull (graphql-ws awaits each send's callback, the SSE
// writer of api/sse.ts waits for 'drain'), so a subscriber that does not read keeps its stream
// suspended at a `yield`. Meanwhile live events go to a bounded inbox (references to
// batches every subscriber shares; the oldest are dropped and re-read from the
// database when it overflows). Past `maxQueued` live items
// published while the consumer has not taken one, the stream gives up: it drops its
// bus subscriptions at once and ends with SlowConsumerError when next pulled.

/** Rows per database read; a chunk is at most ~8 KiB, so a page stays under ~1.6 MiB. */
const PAGE = 200;
/**
 * How long to wait for the bus before checking the database anyway (the default of
 * STREAM_POLL_MS); doubles while quiet, up to POLL_MAX_MS (a longer wait stays as it is).
 * Over a lossless bus (EVENTS=memory) the check is only a safety net (e.g. a status
 * change nobody published), so it starts where the others end, or later.
 */
const DEFAULT_POLL_MS = 2000;
const POLL_MAX_MS = 30_000;
const LOSSLESS_POLL_MS = 60_000;
/** Live items held while the consumer is busy; past this the oldest are dropped and read back. */
const INBOX_ITEMS = 1000;
/** The default of SUBSCRIPTION_BUFFER_LIMIT. */
export const DEFAULT_MAX_QUEUED = 1000;

export interface StreamOptions {
  scope: Scope;
  bus: EventBus;
  generationId: string;
  afterSeq?: number | null;
  /** Live items that may be published while the consumer takes none before the stream ends with SlowConsumerError. */
  maxQueued?: number;
  /** How long a quiet stream waits for the bus before it checks the database (STREAM_POLL_MS); it doubles while quiet, up to 30 s. */
  pollMs?: number;
}

/**
 * A live stream: an async generator whose `return()` takes effect at once (its bus
 * subscriptions close, a pending pull ends), and that can be ended from outside
 * (access re-check, token expiry) without a wrapper around every pull.
 */
export interface LiveStream<T> extends AsyncGenerator<T> {
  /** Ends the stream: its pending (or next) pull rejects with `reason`; then it is over. */
  end(reason: Error): void;
  /** Settles once the stream is over: completed, failed, ended or closed by its consumer. */
  readonly closed: Promise<void>;
  /** Its part of the generation is over: it completes on its own once it has handed out the rest. */
  readonly finishing: boolean;
}

/** The consumer fell too far behind; it should subscribe again with `afterSeq: lastSeq`. */
export class SlowConsumerError extends Error {
  readonly code = 'SLOW_CONSUMER';
  constructor(readonly lastSeq: number | null) {
    super('Too far behind; resubscribe with afterSeq set to the last seq you received.');
    this.name = 'SlowConsumerError';
  }
}

/** History pages shared by the streams of this process (many viewers joining one generation replay it once). */
const chunkPages = createPageCache<ChunkEvent>(PAGE);
const logLinePages = createPageCache<LogLineEvent>(PAGE);
/** The inboxes' polls: one timer for the streams of this process. */
const polls = new Deadlines(() => performance.now());

/** Completes when the generation is terminal: a fix round may add model output after a build. */
export function generationChunks(options: StreamOptions): Promise<LiveStream<ChunkEvent>> {
  return sequenced(options, 'generationChunks', (tx, id, after) => generationStore.chunkPageOfMember(tx, id, after, PAGE), chunkPages, hasEnded);
}

export function buildLogs(options: StreamOptions): Promise<LiveStream<LogLineEvent>> {
  return sequenced(options, 'buildLogs', (tx, id, after) => generationStore.logLinePageOfMember(tx, id, after, PAGE), logLinePages, hasEnded);
}

/** The current state first, then each change; completes after a terminal state. */
export async function generationUpdates(options: StreamOptions): Promise<LiveStream<GenerationRow>> {
  const { scope, bus, generationId } = options;
  const inbox = new Inbox<StatusEvent>(bus, generationId, ['generationUpdated'], { capacity: 32, weight: stampArrival, polls });
  const first = await readState(scope, generationId).catch((error: unknown) => {
    inbox.close();
    throw error;
  });
  return liveStream(inbox, hasEnded(first.row), async function* (stop) {
    try {
      /** The last read: which of the events in the inbox it covers. */
      let read = first;
      let last = first.row;
      yield last;
      const poll = new Backoff(bus, options.pollMs);
      while (!hasEnded(last)) {
        const { items, timedOut } = await inbox.wait(poll.next());
        if (stop.now()) return;
        if (!timedOut) poll.reset();
        // What arrived before the last read began is in it: applied after it, it would step back.
        const events = items.filter((event) => !arrivedBy(event, read.began));
        if (events.length === 0 && !timedOut) continue;
        // Every change is read, never applied from the event: a bus may deliver an event twice,
        // after newer ones (a replaced publisher, a catch-up after a reconnect), and phases repeat
        // (BUILDING, FIXING, BUILDING), so an event alone cannot tell whether it steps back.
        read = await stateAfter(events.at(-1), scope, generationId);
        const next = read.row;
        if (stop.now()) return;
        stop.finishing = hasEnded(next);
        if (next.status !== last.status || next.phase !== last.phase) yield next;
        last = next;
      }
    } finally {
      stop.over();
    }
  });
}

type State = Pick<GenerationRow, 'status' | 'phase'>;

/** What an event counts for in an inbox: its live items (a status change, none). */
const itemsIn = (event: unknown[] | StatusEvent): number => (Array.isArray(event) ? event.length : 0);

/**
 * The order in which status events reached this process, so that a generationUpdated
 * stream can tell an event its last read already covers (it arrived before the read's
 * query began) from one that may be newer. The streams of a process share the event
 * objects (every publisher hands over a new one), so one stamp serves them all.
 */
let arrivals = 0;
const arrivalOf = new WeakMap<StatusEvent, number>();

/** A status event's weight in a generationUpdated inbox (one): its weight is taken as it arrives, so it is stamped then. */
function stampArrival(event: StatusEvent): number {
  if (!arrivalOf.has(event)) arrivalOf.set(event, ++arrivals);
  return 1;
}

/** Whether the event was among the first `arrival` to reach this process. */
const arrivedBy = (event: StatusEvent, arrival: number): boolean => (arrivalOf.get(event) ?? Infinity) <= arrival;

const hasEnded = (state: State): boolean => isTerminal(state.status);

async function sequenced<T extends { seq: number }>(
  options: StreamOptions,
  topic: 'generationChunks' | 'buildLogs',
  readAfter: (tx: Tx, generationId: string, afterSeq: number) => Promise<T[]>,
  pages: PageCache<T>,
  isOver: (state: State) => boolean,
): Promise<LiveStream<T>> {
  const { scope, bus, generationId } = options;
  // Subscribe before the first read so nothing published meanwhile is missed.
  const maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
  // Batches are shared by every subscriber of the generation: holding them costs a reference each.
  const inbox = new Inbox<T[] | StatusEvent>(bus, generationId, [topic, 'generationUpdated'], {
    capacity: Math.max(maxQueued, INBOX_ITEMS),
    slowAfter: maxQueued,
    weight: itemsIn,
    polls,
  });
  /** `readAt`: taken before the transaction, so the read sees at least what was committed then. */
  const readAndKeep = async (tx: Tx, after: number, readAt: number) => {
    const rows = await readAfter(tx, generationId, after);
    pages.put(generationId, after, rows, readAt);
    return rows;
  };
  // One transaction authorises (RLS decides whether the generation exists) and reads the first page.
  const afterSeq = options.afterSeq ?? -1;
  // A crowd subscribing at once is database work in bursts: it takes turns with replays,
  // asking again when woken, since every waiter of a turn wakes at once.
  for (let pause = replayPause(); pause; pause = replayPause()) await pause;
  const firstReadAt = performance.now();
  const initial = await scope
    .run(async (tx) => {
      const [generation] = await generationStore.findMany(tx, [generationId]);
      // Authorised by the read above; only then may a page read for another viewer serve this one.
      return generation && { generation, page: pages.get(generationId, afterSeq) ?? (await readAndKeep(tx, afterSeq, firstReadAt)) };
    })
    .catch((error: unknown) => {
      inbox.close();
      throw error;
    });
  if (!initial) {
    inbox.close();
    throw new NotFoundError('Generation not found.');
  }
  /**
   * The rows after `after`, as a read begun at or after `since` sees them: another stream's
   * page will do when it was read since then. `since` is when this stream had reason to
   * read: a full history once its first transaction had seen the generation's state (if
   * that was terminal, every row was written before then), a repair once the event that
   * called for it had arrived (rows are written before they are published).
   */
  const read = (after: number, since: number) => {
    const readAt = performance.now();
    return pages.get(generationId, after, since) ?? scope.run((tx) => readAndKeep(tx, after, readAt));
  };
  const historySince = performance.now();
  const overAtStart = isOver(initial.generation);
  // Handed over once, so a long-lived stream does not keep its first page (up to PAGE rows) alive.
  let firstPage: T[] | undefined = initial.page;
  return liveStream(inbox, overAtStart, async function* (stop) {
    let last = afterSeq;
    let over = overAtStart;
    /** Items ready to hand out, in seq order. */
    let ready: T[] = firstPage ?? [];
    firstPage = undefined;
    /** Whether the database may have more after `last` (a repair, more pages, or the final drain). */
    let fromDatabase = ready.length === PAGE;
    /** Whether `ready` was read back (history or a repair) rather than taken live: it yields to live batches. */
    let replaying = true;
    /** The moment from which a read of `fromDatabase` must see what was written. */
    let readSince = historySince;
    const poll = new Backoff(bus, options.pollMs);
    try {
      for (;;) {
        // One item at a time: while the consumer holds one, the inbox counts what queues behind it.
        for (const item of ready) {
          const pause = replaying ? replayPause() : undefined;
          if (pause) await pause;
          if (stop.now()) return;
          last = item.seq;
          inbox.consumerBusy = true;
          yield item;
          inbox.took();
          if (inbox.slow) throw new SlowConsumerError(last);
        }
        if (fromDatabase) {
          ready = await read(last, readSince);
          fromDatabase = ready.length === PAGE;
          replaying = true;
          continue;
        }
        // Everything of this part was persisted before the state moved on, and it has been read.
        if (over) return;
        // Not the batch just handed out: an idle stream would hold it until the next event.
        ready = [];
        const { items, timedOut } = await inbox.wait(poll.next());
        if (stop.now()) return;
        replaying = false;
        let expected = last + 1;
        let repair = inbox.overflowed();
        /** Past a gap the items come from the database; the status events after it still count (the last may end the run). */
        let gap = false;
        for (const event of items) {
          if (!Array.isArray(event)) {
            over ||= isOver(event);
            continue;
          }
          if (gap) continue;
          for (const item of event) {
            if (item.seq < expected) continue;
            if (item.seq > expected) {
              gap = repair = true; // the rest comes from the database
              break;
            }
            ready.push(item);
            expected += 1;
          }
        }
        // Emptied (its store freed): an idle stream would hold it, and the batches in it, until the next event.
        items.length = 0;
        if (timedOut) {
          // A quiet spell: whatever the bus may have lost is in the database.
          over ||= isOver(await current(scope, generationId));
          repair = true;
        } else {
          poll.reset();
        }
        stop.finishing = over;
        // Over: after the live items, read once more to the end.
        fromDatabase = repair || over;
        readSince = performance.now();
      }
    } finally {
      stop.over();
    }
  });
}

/** What a stream's body checks after each wait: whether it must stop (see `liveStream`). */
interface Stop {
  /** True when the consumer closed the stream (end quietly); throws the reason it was ended with. */
  now(): boolean;
  /** The body's `finally`: the stream is over (a body never started is over when closed). */
  over(): void;
  /** Set by the body once its part of the generation is over (LiveStream.finishing). */
  finishing: boolean;
}

/**
 * The one wrapper of a live stream's generator, with no work per pull (`next` is the
 * generator's own) and its methods on the prototype, so a thousand idle streams hold
 * no closures for it. An async generator's `return()` waits until its pending `next()`
 * settles, which could be a whole poll interval: here `return()` and `end()` first
 * close the inbox, which wakes the body; it then sees `stop.now()` and ends quietly
 * (closed) or with the reason (ended). The inbox closes, and `closed` settles, once
 * whichever way the stream is over.
 */
function liveStream<T, E>(inbox: Inbox<E>, finishing: boolean, body: (stop: Stop) => AsyncGenerator<T>): LiveStream<T> {
  return new Live(inbox, finishing, body);
}

class Live<T, E> implements LiveStream<T>, Stop {
  readonly closed: Promise<void>;
  private settle!: () => void;
  private closedByConsumer = false;
  private reason: Error | undefined;
  private readonly inner: AsyncGenerator<T>;

  constructor(
    private readonly inbox: Inbox<E>,
    public finishing: boolean,
    body: (stop: Stop) => AsyncGenerator<T>,
  ) {
    this.closed = new Promise<void>((resolve) => (this.settle = resolve));
    this.inner = body(this);
  }

  now(): boolean {
    if (this.closedByConsumer) return true;
    if (this.reason) throw this.reason;
    return false;
  }

  over() {
    this.inbox.close();
    this.settle();
  }

  next() {
    return this.inner.next();
  }

  return(value?: unknown) {
    this.close();
    return this.inner.return(value);
  }

  throw(error: unknown) {
    this.close();
    return this.inner.throw(error);
  }

  end(reason: Error) {
    this.reason ??= reason;
    this.inbox.close();
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  async [Symbol.asyncDispose]() {
    this.close();
    await this.inner.return(undefined);
  }

  private close() {
    this.closedByConsumer = true;
    this.over();
  }
}

/**
 * The state read after a status event, shared by every stream of this process that the
 * same event woke: one read per change instead of one per viewer. Each stream
 * authorised its viewer when it opened (and the access re-check ends it when that
 * lapses); a viewer whose shared read failed reads for itself.
 */
const statesAfter = new WeakMap<StatusEvent, Promise<StateRead>>();

function stateAfter(event: StatusEvent | undefined, scope: Scope, generationId: string): Promise<StateRead> {
  if (!event) return readState(scope, generationId);
  let state = statesAfter.get(event);
  if (!state) {
    state = readState(scope, generationId);
    statesAfter.set(event, state);
  }
  return state.then(
    (read) => (read.row.id === generationId ? read : readState(scope, generationId)),
    () => readState(scope, generationId),
  );
}

/** A generation's state as read, and where the read falls among the status events that reached this process. */
interface StateRead {
  row: GenerationRow;
  /** The events that had arrived when its query began, up to this stamp, are in it (rows are written before they are published). */
  began: number;
}

async function readState(scope: Scope, generationId: string): Promise<StateRead> {
  let began = arrivals;
  const [row] = await scope.run((tx) => {
    // Taken in the transaction, just before the query: a scope may take a while to get there.
    began = arrivals;
    return generationStore.findMany(tx, [generationId]);
  });
  if (!row) throw new NotFoundError('Generation not found.');
  return { row, began };
}

const current = async (scope: Scope, generationId: string): Promise<GenerationRow> => (await readState(scope, generationId)).row;

/** Poll intervals that double while nothing happens, with jitter so subscribers do not poll in step. */
class Backoff {
  private readonly min: number;
  private readonly max: number;
  private ms: number;

  constructor(bus: EventBus, pollMs = DEFAULT_POLL_MS) {
    this.min = isLossless(bus) ? Math.max(LOSSLESS_POLL_MS, pollMs) : pollMs;
    this.max = Math.max(this.min, POLL_MAX_MS);
    this.ms = this.min;
  }

  next(): number {
    const ms = this.ms;
    this.ms = Math.min(this.ms * 2, this.max);
    return ms * (0.75 + Math.random() * 0.5);
  }

  reset() {
    this.ms = this.min;
  }
}
