import type { Config } from '../config.js';
import type { Database, Tx } from '../db/client.js';
import type { Logger } from '../observability/logger.js';
import { currentTraceCarrier, type TraceCarrier } from '../observability/tracing.js';

// How a queued generation reaches a worker.
//
// memory (default): the generations table is the queue (docs/decisions/003). Workers
// scan it for QUEUED rows every few seconds and are woken in-process.
//
// pgboss: the generation's job is sent in the very transaction that inserts the row,
// so a generation exists exactly when its job does; pg-boss wakes a worker in another
// process at once (LISTEN/NOTIFY, polling as a floor). Delivery is at least once: the
// worker still claims the row by compare-and-set, and a second delivery finds it taken
// and does nothing. The worker's table scan stays as a safety net, limited to rows
// that have been QUEUED for a while (scanMinAgeMs), for jobs pg-boss can no longer
// deliver (a worker died between taking a job and claiming its row, a job that ran out
// of retries, rows queued before QUEUE=pgboss was turned on).

/** A worker's slots, as a job queue sees them (QUEUE=pgboss). */
export interface JobTaker {
  /** Whether a slot is free now. */
  free(): boolean;
  /** Resolves when a run ends (a slot may be free again), or at once when `signal` aborts. */
  freed(signal: AbortSignal): Promise<void>;
  /**
   * Starts the generation's run in a free slot at once (the claim inside the run decides
   * whether it is ours); false, starting nothing, when no slot is free.
   */
  run(generationId: string, trace?: TraceCarrier): boolean;
}

export interface JobQueue {
  readonly kind: 'memory' | 'pgboss';
  /**
   * Sends the generation's job inside the transaction that inserted it, with the active
   * trace context (memory: only that context, handed over in-process; the row is the job).
   */
  readonly enqueue?: (tx: Tx, generationId: string) => Promise<void>;
  /** Memory: takes the trace context the generation was queued with in this process. */
  takeTrace?(generationId: string): TraceCarrier | undefined;
  /** How long a row must have been QUEUED before the worker's table scan takes it. */
  readonly scanMinAgeMs: number;
  /**
   * Takes jobs into the worker's free slots until `stopConsuming`, and resolves once it has
   * stopped. A job is fetched only while `take` has a slot free, so a worker whose slots are
   * all busy leaves the queue's jobs to the others instead of sitting on one (but for a job
   * fetched just as the table scan took the last slot: it goes back to the queue at once).
   */
  consume?(take: JobTaker): Promise<void>;
  stopConsuming?(): Promise<void>;
  close(): Promise<void>;
}

/** Trace contexts waiting for their run; a row claimed by another process leaves its entry here, hence the cap. */
const MAX_PENDING_TRACES = 1000;

export function createMemoryQueue(): JobQueue {
  // Only filled while tracing is on (no active span: no carrier). Best effort: a restart
  // or a claim by another instance starts the run in a trace of its own.
  const traces = new Map<string, TraceCarrier>();
  return {
    kind: 'memory',
    scanMinAgeMs: 0,
    enqueue: async (_tx, generationId) => {
      const carrier = currentTraceCarrier();
      if (!carrier) return;
      if (traces.size >= MAX_PENDING_TRACES) traces.delete(traces.keys().next().value!);
      traces.set(generationId, carrier);
    },
    takeTrace: (generationId) => {
      const carrier = traces.get(generationId);
      traces.delete(generationId);
      return carrier;
    },
    close: async () => traces.clear(),
  };
}

export async function createJobQueue(
  config: Pick<Config, 'queue' | 'role' | 'pgBoss'>,
  database: Pick<Database, 'url'>,
  logger: Logger,
): Promise<JobQueue> {
  if (config.queue === 'memory') return createMemoryQueue();
  if (!database.url) throw new Error('QUEUE=pgboss needs a PostgreSQL database (DATABASE_URL)');
  const { createPgBossQueue } = await import('./pgboss.js');
  return createPgBossQueue({ url: database.url, schema: config.pgBoss.schema, consumer: config.role !== 'api', logger });
}
