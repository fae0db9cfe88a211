import { setMaxListeners } from 'node:events';
import { createPubSub, type PubSub } from 'graphql-yoga';
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
  const bus = createPubSub<GenerationTopics>({ eventTarget });
  lossless.add(bus);
  return bus;
}
