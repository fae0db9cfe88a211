import type { Deadline, Deadlines } from '../deadlines.js';
import { type EventBus, type GenerationTopics, listen } from '../events/bus.js';

interface InboxOptions<T> {
  /** What one event counts for (live items in it). */
  weight: (event: T) => number;
  /** Weight held at most; past it the oldest events are dropped (the stream reads them back). */
  capacity: number;
  /** Weight that may arrive while the consumer holds one item before the stream is a slow consumer. */
  slowAfter?: number;
  /** Where its poll is scheduled, on the performance.now() clock: one timer for the streams of a process. */
  polls: Deadlines;
}

/** Takes bus events, as they are published, into a bounded buffer that a stream waits on. */
export class Inbox<T> {
  /** Set by the stream while the consumer holds an item (the transport is sending it). */
  consumerBusy = false;
  /** The consumer fell more than `slowAfter` behind; the bus subscriptions are closed. */
  slow = false;
  private queued = 0;
  private held = 0;
  private buffer: T[] = [];
  private dropped = false;
  private closed = false;
  private waiter: (() => void) | undefined;
  private timedOut = false;
  /**
   * The poll outlives the waits: almost every wait ends with an event long before its
   * poll is due, and moving it per event is a good part of what a thousand viewers cost
   * per event. It is moved only to come earlier; due before `pollAt`, it moves on to it.
   */
  private poll: Deadline | undefined;
  private pollAt = 0;
  private readonly stops: (() => void)[];

  constructor(
    bus: EventBus,
    generationId: string,
    topics: readonly (keyof GenerationTopics)[],
    private readonly options: InboxOptions<T>,
  ) {
    const push = (event: unknown) => this.push(event as T);
    this.stops = topics.map((topic) => listen(bus, topic, generationId, push));
  }

  private push(event: T) {
    if (this.closed) return;
    const { weight, capacity, slowAfter } = this.options;
    const w = weight(event);
    if (this.consumerBusy && slowAfter !== undefined && (this.queued += w) > slowAfter) {
      this.slow = true;
      this.buffer = [];
      this.close();
      return;
    }
    while (this.buffer.length > 0 && this.held + w > capacity) {
      this.held -= weight(this.buffer.shift()!);
      this.dropped = true;
    }
    this.buffer.push(event);
    this.held += w;
    this.waiter?.();
  }

  /** The consumer took the item it held: what queued meanwhile no longer counts against it. */
  took() {
    this.consumerBusy = false;
    this.queued = 0;
  }

  /**
   * What arrived since the last call; waits up to `timeoutMs` when nothing has (closing
   * wakes it). Not an async function: most streams wait most of the time, and a
   * suspended one would hold its frame besides the promise.
   */
  wait(timeoutMs: number): Promise<{ items: T[]; timedOut: boolean }> {
    this.timedOut = false;
    if (this.buffer.length > 0 || this.closed) return Promise.resolve(this.take());
    this.pollAt = performance.now() + timeoutMs;
    if (!this.poll) this.poll = this.options.polls.schedule(this.pollAt, this.polled);
    else this.options.polls.bringForward(this.poll, this.pollAt);
    // Taken a turn after the wake-up, so that what arrives within the same tick comes along.
    return new Promise<void>((resolve) => (this.waiter = resolve)).then(this.woken);
  }

  private readonly woken = () => {
    this.waiter = undefined;
    return this.take();
  };

  private take(): { items: T[]; timedOut: boolean } {
    const items = this.buffer;
    this.buffer = [];
    this.held = 0;
    return { items, timedOut: this.timedOut };
  }

  /** The poll is due: a wait still under way times out, or the poll moves on to its own. */
  private readonly polled = () => {
    if (!this.waiter || this.closed) return;
    if (this.pollAt - performance.now() >= 1) return this.options.polls.move(this.poll!, this.pollAt);
    this.timedOut = true;
    this.waiter();
  };

  /** Whether live items were dropped since the last call (read them back from the database). */
  overflowed(): boolean {
    const dropped = this.dropped;
    this.dropped = false;
    return dropped;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.options.polls.cancel(this.poll);
    this.waiter?.();
    for (const stop of this.stops) stop();
  }
}
