import type { Tx } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import { type GenerationDeps, insertAutomaticRetry } from '../generations/generations.js';
import { closeUnfinishedWork, type PipelineDeps, runGeneration } from '../generations/pipeline.js';
import { type GenerationRow, generationStore } from '../generations/store.js';
import type { Logger } from '../observability/logger.js';
import { inJobSpan, type TraceCarrier } from '../observability/tracing.js';
import { reapOrphanBuilds } from './orphans.js';
import type { JobQueue } from './queue.js';

export interface WorkerOptions {
  pipeline: PipelineDeps;
  provider: GenerationDeps['provider'];
  concurrency: number;
  /** How often to look for QUEUED rows nobody woke us for (other instances, restarts). */
  pollMs?: number;
  /** Where jobs come from besides the table scan (QUEUE=pgboss); absent: the table alone. */
  queue?: JobQueue;
  /**
   * This process alone runs generations on its database (embedded PGlite: one process owns
   * DATA_DIR), so a RUNNING row at start was left by a crash: it is ended and retried at
   * once instead of after its lease.
   */
  soleWorker?: boolean;
}

export interface Worker {
  /** A generation was queued: look for work now (given its id, run it at once if a slot is free). */
  wake(generationId?: string): void;
  /**
   * Stops claiming; running generations get `graceMs` to finish, then are handed back
   * (INTERRUPTED, retried elsewhere). A second call with no grace cuts the wait short.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

/**
 * A run handed back by planned stops is retried until it has been tried this often: a worker
 * stopped again and again (a restart loop) does not spend the project's tokens for ever.
 */
export const MAX_HANDED_BACK_ATTEMPTS = 10;

/**
 * The in-process worker. Its queue is the generations table: QUEUED rows are claimed
 * by compare-and-set (so several workers never run one generation twice) and
 * survive restarts; lapsed leases are ended as INTERRUPTED and retried once, runs handed
 * back by a planned stop each time (retryInterrupted).
 */
export function startWorker(options: WorkerOptions): Worker {
  const { concurrency, queue } = options;
  const pipeline: PipelineDeps = { ...options.pipeline, retryInterrupted: (tx, ended, planned) => retryInterrupted(tx, options.provider, [ended], { enqueue: queue?.enqueue, planned, log }) };
  const db = pipeline.db;
  const log: Logger = pipeline.logger.child({ source: 'Worker' });
  const running = new Map<string, { stop: AbortController; done: Promise<void> }>();
  const shutdown = new AbortController();
  let scanning: Promise<void> | undefined;
  let rescan = false;

  const scan = async () => {
    const limit = concurrency * 2;
    while (!shutdown.signal.aborted && running.size < concurrency) {
      const ids = await serviceScope(db).run((tx) => generationStore.queuedIds(tx, limit, queue?.scanMinAgeMs ?? 0));
      // Stopped while the scan was under way: a run launched now would be claimed only to be
      // handed back INTERRUPTED and retried as a new generation, for nothing (take.free() says the same to pg-boss).
      if (shutdown.signal.aborted) return;
      const fresh = ids.filter((id) => !running.has(id)).slice(0, concurrency - running.size);
      for (const id of fresh) launch(id);
      if (fresh.length === 0 || ids.length < limit) return; // that was every QUEUED row: no need to look again
    }
  };

  const wake = (generationId?: string) => {
    if (shutdown.signal.aborted) return;
    // Queued in this process with a slot free: run it now, no scan needed (the claim decides).
    // A job queue (pgboss) delivers its own jobs, so its wake-ups scan as before.
    if (generationId && !queue?.consume && running.size < concurrency) {
      if (!running.has(generationId)) launch(generationId);
      return;
    }
    if (scanning) {
      rescan = true;
      return;
    }
    scanning = scan()
      .catch((error: unknown) => log.error({ err: error }, 'looking for queued generations failed'))
      .finally(() => {
        scanning = undefined;
        if (rescan) {
          rescan = false;
          wake();
        }
      });
  };

  const launch = (id: string, trace?: TraceCarrier) => {
    const stop = new AbortController();
    // The run joins the trace its job was sent in (startGeneration's operation).
    const done = inJobSpan('generation run', trace ?? queue?.takeTrace?.(id), { 'kiln.generation.id': id }, async (span) => {
      const finished = await runGeneration(pipeline, id, stop.signal);
      span.setAttributes({ 'kiln.generation.claimed': finished !== undefined, ...(finished ? { 'kiln.generation.status': finished.status } : {}) });
    })
      .catch((error: unknown) => log.error({ err: error, generationId: id }, 'generation run crashed'))
      .finally(() => {
        running.delete(id);
        for (const resolve of slotFreed.splice(0)) resolve();
        wake(); // a slot is free: anything queued meanwhile
      });
    running.set(id, { stop, done });
  };

  // The slots a job queue (QUEUE=pgboss) fills: it fetches a job only while one is free and
  // starts its run at once; the claim inside the run decides whether it is ours.
  const slotFreed: (() => void)[] = [];
  const take = {
    free: () => running.size < concurrency && !shutdown.signal.aborted,
    freed: (signal: AbortSignal) =>
      new Promise<void>((resolve) => {
        if (signal.aborted) return resolve();
        const done = () => {
          signal.removeEventListener('abort', done);
          resolve();
        };
        slotFreed.push(done);
        signal.addEventListener('abort', done, { once: true });
      }),
    run: (id: string, trace?: TraceCarrier) => {
      if (running.has(id)) return true; // a second delivery of a run under way
      if (!take.free()) return false;
      launch(id, trace);
      return true;
    },
  };

  // Interrupting and queueing the retry commit together, so a crash between them
  // cannot leave an interrupted generation without its retry.
  const recover = ({ all = false }: { all?: boolean } = {}) =>
    serviceScope(db)
      .run(async (tx) => {
        const interrupted = await generationStore.interruptLapsed(tx, { all });
        // The run that left them open is gone: its steps and rounds end with it, and its answer
        // so far goes under its prompt (before its retry's, which follows in this transaction).
        for (const row of interrupted) await closeUnfinishedWork(tx, row.id, row.status);
        await generationStore.answersFromChunks(tx, interrupted.map((row) => row.id));
        return { interrupted, retried: await retryInterrupted(tx, options.provider, interrupted, { enqueue: queue?.enqueue, log }) };
      })
      .then(async ({ interrupted, retried }) => {
        for (const row of interrupted) {
          pipeline.bus.publish('generationUpdated', row.id, { status: row.status, phase: row.phase });
          const ended = row.status === 'CANCELLED' ? 'generation cancelled, as asked' : 'generation interrupted';
          log.warn({ generationId: row.id }, `${all ? 'left running by a stopped process' : 'lease lapsed'}: ${ended}`);
        }
        if (retried) wake();
        await reapOrphanBuilds(db, pipeline.workspaces.dir, pipeline.toolchain.sandbox?.hostUid ?? process.getuid?.() ?? -1, log);
      })
      .catch((error: unknown) => log.error({ err: error }, 'lease recovery failed'));

  // One recovery at a time: through a database outage, each waits for the database (db/outage.ts).
  let recovering: Promise<void> | undefined;
  const poll = setInterval(() => {
    recovering ??= recover().finally(() => (recovering = undefined));
    wake();
  }, options.pollMs ?? Math.max(500, Math.min(5000, pipeline.leaseMs / 2)));
  void recover({ all: options.soleWorker }).then(() => wake());
  queue?.consume?.(take).catch((error: unknown) => log.error({ err: error }, 'taking jobs from the queue failed; the table scan goes on'));

  let stopping: Promise<void> | undefined;
  let hurry: (() => void) | undefined;
  // A second stop with no grace may come before the grace wait has begun (while the queue
  // consumer or a scan is still stopping): it is remembered, so that wait is skipped.
  let hurried = false;
  return {
    wake,
    stop: (stopOptions = {}) => {
      const graceMs = stopOptions.graceMs ?? 0;
      if (stopping) {
        if (graceMs === 0) {
          hurried = true;
          hurry?.();
        }
        return stopping;
      }
      stopping = (async () => {
        shutdown.abort();
        clearInterval(poll);
        for (const resolve of slotFreed.splice(0)) resolve();
        await queue?.stopConsuming?.().catch((error: unknown) => log.warn({ err: error }, 'stopping the queue consumer failed'));
        await scanning;
        if (graceMs > 0 && running.size > 0 && !hurried) {
          log.info({ running: running.size, graceMs }, 'letting running generations finish before handing them back');
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            Promise.all([...running.values()].map((run) => run.done)),
            new Promise<void>((resolve) => {
              hurry = resolve;
              timer = setTimeout(resolve, graceMs);
            }),
          ]);
          clearTimeout(timer);
        }
        for (const { stop } of running.values()) stop.abort('shutdown');
        await Promise.all([...running.values()].map((run) => run.done));
      })();
      return stopping;
    },
  };
}

/**
 * The automatic retry of runs ended INTERRUPTED: a new generation with `retryOf`, queued at once
 * (none in an archived project). A run that died, lost its lease or its database gets one per
 * chain of runs (a user's retry none); one handed back by its worker's planned stop (`planned`:
 * a restart, a deploy) gets one that spends nothing, up to MAX_HANDED_BACK_ATTEMPTS, so rolling
 * restarts do not fail it. Returns how many were queued.
 */
async function retryInterrupted(
  tx: Tx,
  provider: GenerationDeps['provider'],
  rows: GenerationRow[],
  options: { enqueue?: GenerationDeps['enqueue']; planned?: boolean; log: Logger },
): Promise<number> {
  let queued = 0;
  for (const row of rows) {
    if (row.errorCode !== 'INTERRUPTED') continue;
    const spent = retrySpent(row);
    if (options.planned ? row.attempt >= MAX_HANDED_BACK_ATTEMPTS : spent) {
      if (options.planned) options.log.warn({ generationId: row.id, attempt: row.attempt }, 'handed back too often: not retried');
      continue;
    }
    if (await insertAutomaticRetry(tx, { provider, enqueue: options.enqueue }, row, { retrySpent: options.planned ? spent : true })) queued++;
  }
  return queued;
}

/** Rows written before `retry_spent` (or by an older instance during a deploy) have none: a retry had spent it then. */
function retrySpent(row: GenerationRow): boolean {
  return row.retrySpent ?? row.retryOf !== null;
}
