import { createPubSub, type PubSub } from 'graphql-yoga';

// Typed topics with labelled tuples (STYLE 9). The pipeline publishes only what it
// has already persisted, so a subscriber can always repair from the database.

export interface ChunkEvent {
  seq: number;
  text: string;
}

export interface LogLineEvent {
  seq: number;
  step: string;
  stream: 'STDOUT' | 'STDERR';
  text: string;
}

export interface StatusEvent {
  status: 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
  phase: 'QUEUED' | 'GENERATING' | 'WRITING' | 'BUILDING' | 'DONE';
}

export type GenerationTopics = {
  generationChunks: [generationId: string, batch: ChunkEvent[]];
  buildLogs: [generationId: string, batch: LogLineEvent[]];
  generationUpdated: [generationId: string, update: StatusEvent];
  /** Asks whichever worker runs the generation to stop it. */
  generationCancel: [generationId: string, request: { at: string }];
};

export type EventBus = PubSub<GenerationTopics>;

/** The in-process bus (EVENTS=memory). */
export function createMemoryEventBus(): EventBus {
  return createPubSub<GenerationTopics>();
}
