import { sql } from 'drizzle-orm';
import { type DrizzleTransactionLike, fromDrizzle, PgBoss } from 'pg-boss';
import { rowsOf, type Tx } from '../db/client.js';
import type { Logger } from '../observability/logger.js';
import { currentTraceCarrier, type TraceCarrier } from '../observability/tracing.js';
import type { JobQueue } from './queue.js';

// QUEUE=pgboss: one pg-boss queue of generation ids on the application's PostgreSQL.
//
// A job means "a worker should claim this generation", nothing more: the handler
// waits for a free slot, starts the run and returns, which completes the job. From the
// claim on, the generation's own lease (heartbeat, lapse → INTERRUPTED + one retry)
// keeps it safe, so pg-boss never has to hold a job for the length of a build, and a
// job whose handler overran or whose worker died is simply delivered again: the
// compare-and-set claim turns every extra delivery into a no-op.

export const GENERATION_QUEUE = 'kiln-generations';

/** A job's data: the generation, and the trace context it was started in (W3C traceparent) when tracing is on. */
interface GenerationJob {
  generationId: string;
  trace?: TraceCarrier;
}

/** How long a delivered job may wait for a free slot before it is handed back (and delivered again). */
const SLOT_WAIT_SECONDS = 45;

export interface PgBossQueueOptions {
  url: string;
  schema: string;
  /** Whether this process takes jobs (ROLE=worker or all) or only sends them (ROLE=api). */
  consumer: boolean;
  logger: Logger;
}

export async function createPgBossQueue(options: PgBossQueueOptions): Promise<JobQueue & { boss: PgBoss }> {
  const log = options.logger.child({ source: 'PgBoss' });
  const boss = new PgBoss({
    connectionString: options.url,
    schema: options.schema,
    application_name: options.consumer ? 'kiln-pgboss-worker' : 'kiln-pgboss-api',
    max: options.consumer ? 4 : 2,
    // Wakes workers the moment a job is sent; polling stays as the floor. It needs a
    // session of its own: through a transaction-mode pooler pg-boss warns and polls.
    useListenNotify: options.consumer,
    // Maintenance (expiry, retention) is coordinated by pg-boss across instances; only workers do it.
    supervise: options.consumer,
    schedule: false,
    migrate: true,
  });
  boss.on('error', (error: unknown) => log.warn({ err: error }, 'pg-boss reported an error; it keeps retrying'));
  // E.g. listen_notify_unavailable behind a transaction pooler: workers then poll every 2 s.
  boss.on('warning', (warning: unknown) => log.warn({ warning }, 'pg-boss warning'));
  await boss.start();
  await boss.createQueue(GENERATION_QUEUE, {
    notify: true,
    expireInSeconds: SLOT_WAIT_SECONDS + 15,
    retryLimit: 1_000,
    retryDelay: 1,
    deleteAfterSeconds: 24 * 60 * 60,
  });

  const stopping = new AbortController();
  let consuming = false;

  return {
    kind: 'pgboss',
    boss,
    scanMinAgeMs: 30_000,
    enqueue: async (tx: Tx, generationId: string) => {
      // A request's transaction runs as `authenticated` for RLS; pg-boss's tables are the
      // server's own, so the job is written as the connection's role and RLS resumes after.
      const [{ role } = { role: 'none' }] = rowsOf<{ role: string }>(await tx.execute(sql`select current_setting('role') as role`));
      if (role !== 'none') await tx.execute(sql`select set_config('role', 'none', true)`);
      // The generation id is the job id: sending twice for one generation makes one job.
      const trace = currentTraceCarrier();
      const job: GenerationJob = trace ? { generationId, trace } : { generationId };
      await boss.send(GENERATION_QUEUE, job, { id: generationId, db: fromDrizzle(tx as unknown as DrizzleTransactionLike, sql) });
      if (role !== 'none') await tx.execute(sql`select set_config('role', ${role}, true)`);
    },
    consume: async (take) => {
      if (!options.consumer) throw new Error('this process only sends jobs (ROLE=api)');
      consuming = true;
      await boss.work<GenerationJob>(
        GENERATION_QUEUE,
        { batchSize: 1, localConcurrency: 1, pollingIntervalSeconds: 2, notifyPollingIntervalSeconds: 10 },
        async ([job]) => {
          if (!job) return;
          const signal = AbortSignal.any([job.signal, stopping.signal, AbortSignal.timeout(SLOT_WAIT_SECONDS * 1000)]);
          await take(job.data.generationId, signal, job.data.trace);
        },
      );
    },
    stopConsuming: async () => {
      stopping.abort();
      if (consuming) await boss.offWork(GENERATION_QUEUE, { wait: true });
      consuming = false;
    },
    close: async () => {
      stopping.abort();
      await boss.stop({ graceful: true, timeout: 5_000 });
    },
  };
}
