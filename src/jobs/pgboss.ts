import { sql } from 'drizzle-orm';
import { setTimeout as delay } from 'node:timers/promises';
import { type DrizzleTransactionLike, fromDrizzle, PgBoss } from 'pg-boss';
import { rowsOf, type Tx } from '../db/client.js';
import { DATABASE_SILENCE_LIMIT_MS } from '../db/outage.js';
import type { Logger } from '../observability/logger.js';
import { currentTraceCarrier, type TraceCarrier } from '../observability/tracing.js';
import type { JobQueue, JobTaker } from './queue.js';

// QUEUE=pgboss: one pg-boss queue of generation ids on the application's PostgreSQL.
//
// A job means "a worker should claim this generation", nothing more: the handler starts
// the run in a free slot and returns, which completes the job. From the claim on, the
// generation's own lease (heartbeat, lapse → INTERRUPTED + its retry) keeps it safe, so
// pg-boss never has to hold a job for the length of a build, and a job whose handler
// overran or whose worker died is simply delivered again: the compare-and-set claim turns
// every extra delivery into a no-op.
//
// pg-boss fetches whenever a worker of its own is idle, not when ours has room, so a
// pg-boss worker runs here only while a slot is free: the run that fills the last slot
// stops it, the next run to end starts another (which fetches at once). A worker whose
// slots are all busy thus leaves the queue's jobs to the others instead of sitting on one.

export const GENERATION_QUEUE = 'kiln-generations';

/** A job's data: the generation, and the trace context it was started in (W3C traceparent) when tracing is on. */
interface GenerationJob {
  generationId: string;
  trace?: TraceCarrier;
}

/** pg-boss's fetching: at once when a job is sent (NOTIFY), polling as the floor; one job per fetch. */
/** After a pg-boss worker failed to start. */
const RESTART_DELAY_MS = 5_000;
const WORK_OPTIONS = { batchSize: 1, localConcurrency: 1, pollingIntervalSeconds: 2, notifyPollingIntervalSeconds: 10 } as const;

export interface PgBossQueueOptions {
  url: string;
  schema: string;
  /** Whether this process takes jobs (ROLE=worker or all) or only sends them (ROLE=api). */
  consumer: boolean;
  logger: Logger;
  /** How long a pg-boss statement may go unanswered before its connection is dropped; DATABASE_SILENCE_LIMIT_MS unless a test shortens it. */
  silenceLimitMs?: number;
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
    // pg-boss hands its whole configuration to node-postgres (pool and LISTEN client), which
    // its types do not list. A connection gone silent (a failover leaving half-open sockets)
    // would hold a statement for the 10-15 minutes TCP takes to give up: past this limit the
    // statement fails and pg-pool destroys its connection, so the next one opens a new one.
    ...{ query_timeout: options.silenceLimitMs ?? DATABASE_SILENCE_LIMIT_MS },
  });
  boss.on('error', (error: unknown) => log.warn({ err: error }, 'pg-boss reported an error; it keeps retrying'));
  // E.g. listen_notify_unavailable behind a transaction pooler: workers then poll every 2 s.
  boss.on('warning', (warning: unknown) => log.warn({ warning }, 'pg-boss warning'));
  await boss.start();
  await boss.createQueue(GENERATION_QUEUE, {
    notify: true,
    // The handler only starts a run; this bounds a handler that hangs all the same.
    expireInSeconds: 60,
    retryLimit: 1_000,
    retryDelay: 1,
    deleteAfterSeconds: 24 * 60 * 60,
  });

  const stopping = new AbortController();
  let consuming: Promise<void> | undefined;

  /** Runs a pg-boss worker whenever `take` has a slot free, until stopConsuming. */
  const consumeWhileFree = async (take: JobTaker) => {
    while (!stopping.signal.aborted) {
      if (!take.free()) {
        await take.freed(stopping.signal);
        continue;
      }
      const full = new AbortController();
      let workerId: string | undefined;
      let paused = false;
      // Called in the handler, offWork marks the pg-boss worker stopping before the handler
      // returns, so it fetches nothing more; its job still completes.
      const pause = () => {
        full.abort();
        if (!workerId || paused) return;
        paused = true;
        boss.offWork(GENERATION_QUEUE, { id: workerId, wait: false }).catch((error: unknown) => log.warn({ err: error }, 'stopping a pg-boss worker failed'));
      };
      const working = await boss.work<GenerationJob>(GENERATION_QUEUE, WORK_OPTIONS, async ([job]) => {
        if (!job) return;
        const started = take.run(job.data.generationId, job.data.trace);
        if (!take.free()) pause();
        // Room for more: fetch again now rather than after the polling interval (a backlog drains at once).
        else if (workerId) boss.notifyWorker(workerId);
        // The slots filled up some other way (the table scan) between the fetch and now: the job
        // goes back to the queue (a retry, after retryDelay) for a worker with room; this one no longer fetches.
        if (!started) throw new Error('no free slot; the job goes back to the queue');
      }).catch((error: unknown) => {
        // The table scan still finds what is queued; try again in a while rather than never.
        log.warn({ err: error }, 'starting a pg-boss worker failed; retrying');
        return undefined;
      });
      if (working === undefined) {
        await delay(RESTART_DELAY_MS, undefined, { signal: stopping.signal }).catch(() => {});
        continue;
      }
      workerId = working;
      await new Promise<void>((resolve) => {
        const signal = AbortSignal.any([full.signal, stopping.signal]);
        if (signal.aborted) return resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      pause();
    }
  };

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
      consuming = consumeWhileFree(take);
      await consuming;
    },
    stopConsuming: async () => {
      stopping.abort();
      await consuming?.catch(() => {}); // its failure is reported by consume's caller
      // Every pg-boss worker this queue started, the last one included, stopped with its handler done.
      if (consuming) await boss.offWork(GENERATION_QUEUE, { wait: true });
      consuming = undefined;
    },
    close: async () => {
      stopping.abort();
      await boss.stop({ graceful: true, timeout: 5_000 });
    },
  };
}
