import { desc, eq } from 'drizzle-orm';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { generationChunks } from '../db/schema.js';
import { serviceScope } from '../db/scope.js';
import { generationStore } from '../generations/store.js';
import type { Logger } from '../observability/logger.js';
import { type ChunkEvent, createEventBusOver, createMemoryEventBus, type EventBus, type GenerationTopics, type LogLineEvent } from './bus.js';

// Picks the event bus of EVENTS: memory (one process), postgres (LISTEN/NOTIFY) or
// redis. Every kind is the same typed PubSub; what crosses processes is only ever
// something already persisted, so whatever a transport loses, subscribers read back.

export interface EventBusHandle {
  readonly kind: 'memory' | 'postgres' | 'redis';
  readonly bus: EventBus;
  /** True while events from other processes are known to arrive (always for memory). */
  readonly connected: boolean;
  close(): Promise<void>;
}

export async function createEventBus(
  config: Pick<Config, 'events'>,
  database: Pick<Database, 'db' | 'url'>,
  logger: Logger,
): Promise<EventBusHandle> {
  const { kind } = config.events;
  if (kind === 'memory') return { kind, bus: createMemoryEventBus(logger), connected: true, close: async () => {} };

  const reads = generationEventReads(database);
  if (kind === 'postgres') {
    if (!database.url) throw new Error('EVENTS=postgres needs a PostgreSQL database (DATABASE_URL)');
    // Each transport is loaded only when configured (ioredis alone is dozens of modules at start-up).
    const { createPostgresEventTarget } = await import('./postgres.js');
    const target = createPostgresEventTarget({
      listenUrl: config.events.listenUrl ?? database.url,
      publishUrl: database.url,
      logger,
      shrink: pointerTo,
      expand: reads.expand,
      resync: reads.resync,
    });
    return started(kind, target);
  }
  if (!config.events.redisUrl) throw new Error('EVENTS=redis needs REDIS_URL');
  const { createRedisEventBusTarget } = await import('./redis.js');
  const target = createRedisEventBusTarget({ url: config.events.redisUrl, logger, resync: reads.resync });
  return started(kind, target);
}

/** The handle of a cross-process transport, once it listens. */
async function started(
  kind: 'postgres' | 'redis',
  target: { start(): Promise<void>; readonly connected: boolean; close(): Promise<void> },
): Promise<EventBusHandle> {
  await target.start();
  return {
    kind,
    bus: createEventBusOver(target as unknown as EventTarget),
    get connected() {
      return target.connected;
    },
    close: () => target.close(),
  };
}

/** A batch's stand-in when it is too large for NOTIFY: the seq range it covers. */
interface SeqRange {
  from: number;
  to: number;
}

function parseTopic(topic: string): { routingKey: keyof GenerationTopics; generationId: string } | undefined {
  const at = topic.indexOf(':');
  if (at < 0) return undefined;
  return { routingKey: topic.slice(0, at) as keyof GenerationTopics, generationId: topic.slice(at + 1) };
}

export function pointerTo(topic: string, detail: unknown): SeqRange | undefined {
  const routingKey = parseTopic(topic)?.routingKey;
  if (routingKey !== 'generationChunks' && routingKey !== 'buildLogs') return undefined;
  const batch = detail as { seq: number }[];
  if (!Array.isArray(batch) || batch.length === 0) return undefined;
  return { from: batch[0]!.seq, to: batch.at(-1)!.seq };
}

/** Reads behind pointers and reconnects, in the service scope: subscribers were authorised when they subscribed. */
function generationEventReads(database: Pick<Database, 'db'>) {
  const run = serviceScope(database.db).run;
  const toChunk = ({ seq, text, round }: ChunkEvent): ChunkEvent => ({ seq, text, round });
  const toLine = ({ seq, step, stream, text, round }: LogLineEvent): LogLineEvent => ({ seq, step, stream, text, round });
  return {
    expand: async (topic: string, pointer: unknown): Promise<unknown> => {
      const parsed = parseTopic(topic);
      const { from, to } = pointer as SeqRange;
      if (!parsed || !Number.isInteger(from) || !Number.isInteger(to) || to < from) return undefined;
      const count = to - from + 1;
      if (parsed.routingKey === 'generationChunks') {
        const rows = await run((tx) => generationStore.chunksAfter(tx, parsed.generationId, from - 1, count));
        return rows.length > 0 ? rows.map(toChunk) : undefined;
      }
      if (parsed.routingKey === 'buildLogs') {
        const rows = await run((tx) => generationStore.logLinesAfter(tx, parsed.generationId, from - 1, count));
        return rows.length > 0 ? rows.map(toLine) : undefined;
      }
      return undefined;
    },
    /**
     * What a subscriber needs after the transport was down: the last persisted item
     * (a seq past the subscriber's last one reads as a gap and is repaired from the
     * database), the current status, or a cancel request still pending.
     */
    resync: async (topic: string): Promise<unknown> => {
      const parsed = parseTopic(topic);
      if (!parsed) return undefined;
      const { routingKey, generationId } = parsed;
      return run(async (tx) => {
        switch (routingKey) {
          case 'generationChunks': {
            const rows = await tx
              .select({ seq: generationChunks.seq, text: generationChunks.text, round: generationChunks.round })
              .from(generationChunks)
              .where(eq(generationChunks.generationId, generationId))
              .orderBy(desc(generationChunks.seq))
              .limit(1);
            return rows.length > 0 ? rows : undefined;
          }
          case 'buildLogs': {
            const rows = await generationStore.logTail(tx, generationId, 1);
            return rows.length > 0 ? rows.map(toLine) : undefined;
          }
          case 'generationUpdated': {
            const row = await generationStore.find(tx, generationId);
            return row ? { status: row.status, phase: row.phase } : undefined;
          }
          case 'generationCancel': {
            const row = await generationStore.find(tx, generationId);
            return row?.status === 'RUNNING' && row.cancelRequestedAt ? { at: row.cancelRequestedAt.toISOString() } : undefined;
          }
          default:
            return undefined;
        }
      });
    },
  };
}
