import { createPubSub, type PubSub, type PubSubEventTarget } from 'graphql-yoga';
import type { GenerationPhase, GenerationStatus } from '../generations/status.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { type CallbackOrHandler, LocalListeners } from './listeners.js';

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
  const onEvent = (event: Event) => listener((event as CustomEvent<GenerationTopics[K][1]>).detail);
  target.addEventListener(`${routingKey}:${id}`, onEvent);
  // The topic is spelled again to leave: a listener holds no copy of it meanwhile (a thousand viewers of one generation, a thousand copies).
  return () => target.removeEventListener(`${routingKey}:${id}`, onEvent);
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

/**
 * The in-process bus (EVENTS=memory): a set of listeners per topic (Node's EventTarget
 * checks every listener of a type for a duplicate on each add and remove, which is
 * quadratic in a popular generation's thousands of viewers). A listener that throws is
 * logged; the others still get the event, and the process goes on.
 */
export function createMemoryEventBus(logger: Logger = createLogger('warn')): EventBus {
  const log = logger.child({ source: 'MemoryEvents' });
  const listeners = new LocalListeners();
  const target: Pick<EventTarget, 'addEventListener' | 'removeEventListener' | 'dispatchEvent'> = {
    addEventListener: (topic, callback) => void listeners.add(topic, callback as CallbackOrHandler),
    removeEventListener: (topic, callback) => void listeners.remove(topic, callback as CallbackOrHandler),
    dispatchEvent: (event) => {
      listeners.dispatch(event, log);
      return true;
    },
  };
  const bus = createEventBusOver(target as EventTarget);
  lossless.add(bus);
  return bus;
}
