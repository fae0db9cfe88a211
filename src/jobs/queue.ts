import type { Config } from '../config.js';
import type { Database, Tx } from '../db/client.js';
import type { Logger } from '../observability/logger.js';

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

export interface JobQueue {
  readonly kind: 'memory' | 'pgboss';
  /** Sends the generation's job inside the transaction that inserted it; none for memory. */
  readonly enqueue?: (tx: Tx, generationId: string) => Promise<void>;
  /** How long a row must have been QUEUED before the worker's table scan takes it. */
  readonly scanMinAgeMs: number;
  /**
   * Delivers jobs to `take` until `stopConsuming`. `take` resolves once the worker has
   * taken the generation, or rejects to hand the job back (it is delivered again later).
   */
  consume?(take: (generationId: string, signal: AbortSignal) => Promise<void>): Promise<void>;
  stopConsuming?(): Promise<void>;
  close(): Promise<void>;
}

export function createMemoryQueue(): JobQueue {
  return { kind: 'memory', scanMinAgeMs: 0, close: async () => {} };
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
