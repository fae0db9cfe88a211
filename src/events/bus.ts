import { setMaxListeners } from 'node:events';
import { createPubSub, type PubSub, type PubSubEventTarget } from 'graphql-yoga';
import type { GenerationPhase, GenerationStatus } from '../generations/status.js';

// Typed topics with labelled tuples (STYLE 9). The pipeline publishes only what it
// has already persisted, so a subscriber can always repair from the database.

export interface ChunkEvent {
  seq: number;
  text: string;
  /** 0 for the first answer, N for fix round N (absent: 0). */
  round?: number;
}

export interface LogLineEvent {
  seq: number;
  step: string;
  stream: 'STDOUT' | 'STDERR';
  text: string;
  /** The build's round: 0 after the first answer, N after fix round N (absent: 0). */
  round?: number;
}

export interface StatusEvent {
  status: GenerationStatus;
  phase: GenerationPhase;
}

export type GenerationTopics = {
  generationChunks: [generationId: string, batch: ChunkEvent[]];
  buildLogs: [generationId: string, batch: LogLineEvent[]];
  generationUpdated: [generationId: string, update: StatusEvent];
  /** Asks whichever worker runs the generation to stop it. */
  generationCancel: [generationId: string, request: { at: string }];
};

export type EventBus = PubSub<GenerationTopics>;

const lossless = new WeakSet<EventBus>();
/** The event target under each bus made here, for `listen`. */
const targets = new WeakMap<EventBus, EventTarget>();

/** A bus over an event target (the memory one, or one that reaches other processes). */
export function createEventBusOver(eventTarget: EventTarget): EventBus {
  const bus = createPubSub<GenerationTopics>({ eventTarget: eventTarget as unknown as PubSubEventTarget<GenerationTopics> });
  targets.set(bus, eventTarget);
  return bus;
}

/**
 * Calls `listener` with each event of a topic as it is published; returns the way to
 * stop. The same events as `subscribe`, without an async iterator and its queue per
 * subscriber: what a generation with a thousand viewers pays per event.
 */
export function listen<K extends keyof GenerationTopics>(
  bus: EventBus,
  routingKey: K,
  id: GenerationTopics[K][0],
  listener: (payload: GenerationTopics[K][1]) => void,
): () => void {
  const target = targets.get(bus);
  if (!target) return listenByIterating(bus, routingKey, id, listener);
  const topic = `${routingKey}:${id}`;
  const onEvent = (event: Event) => listener((event as CustomEvent<GenerationTopics[K][1]>).detail);
  target.addEventListener(topic, onEvent);
  return () => target.removeEventListener(topic, onEvent);
}

/** For a bus made elsewhere (tests may hand one in). */
function listenByIterating<K extends keyof GenerationTopics>(bus: EventBus, routingKey: K, id: GenerationTopics[K][0], listener: (payload: GenerationTopics[K][1]) => void) {
  const iterator = (bus.subscribe as (key: K, id: string) => AsyncIterable<GenerationTopics[K][1]>)(routingKey, id)[Symbol.asyncIterator]();
  let stopped = false;
  void (async () => {
    for (let next = await iterator.next(); !next.done && !stopped; next = await iterator.next()) listener(next.value);
  })();
  return () => {
    stopped = true;
    void iterator.return?.();
  };
}

/**
 * Whether every event published reaches every subscriber of this process (the memory
 * bus). Streams then poll the database only as a rare safety net; over a bus that may
 * drop events (a reconnecting LISTEN or Redis connection) they poll sooner.
 */
export function isLossless(bus: EventBus): boolean {
  return lossless.has(bus);
}

/** The in-process bus (EVENTS=memory). */
export function createMemoryEventBus(): EventBus {
  // One listener per subscriber and topic: a popular generation has thousands, not a leak.
  const eventTarget = new EventTarget();
  setMaxListeners(0, eventTarget);
  const bus = createEventBusOver(eventTarget);
  lossless.add(bus);
  return bus;
}
