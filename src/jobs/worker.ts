import type { Db } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import { insertGeneration, type GenerationDeps } from '../generations/generations.js';
import { type PipelineDeps, runGeneration } from '../generations/pipeline.js';
import { type GenerationRow, generationStore } from '../generations/store.js';
import type { Logger } from '../observability/logger.js';

export interface WorkerOptions {
  pipeline: PipelineDeps;
  provider: GenerationDeps['provider'];
  concurrency: number;
  /** How often to look for QUEUED rows nobody woke us for (other instances, restarts). */
  pollMs?: number;
}

export interface Worker {
  /** A generation was queued: look for work now. */
  wake(generationId?: string): void;
  /** Stops claiming; running generations are handed back (INTERRUPTED, retried). */
  stop(): Promise<void>;
}

/**
 * The in-process worker. Its queue is the generations table: QUEUED rows are claimed
 * by compare-and-set (so several workers never run one generation twice) and
 * survive restarts; lapsed leases are ended as INTERRUPTED and retried once.
 */
export function startWorker(options: WorkerOptions): Worker {
  const { pipeline, concurrency } = options;
  const db = pipeline.db;
  const log: Logger = pipeline.logger.child({ source: 'Worker' });
  const running = new Map<string, { stop: AbortController; done: Promise<void> }>();
  const shutdown = new AbortController();
  let scanning: Promise<void> | undefined;
  let rescan = false;

  const scan = async () => {
    while (!shutdown.signal.aborted && running.size < concurrency) {
      const ids = await serviceScope(db).run((tx) => generationStore.queuedIds(tx, concurrency * 2));
      const fresh = ids.filter((id) => !running.has(id)).slice(0, concurrency - running.size);
      if (fresh.length === 0) return;
      for (const id of fresh) launch(id);
    }
  };

  const wake = () => {
    if (shutdown.signal.aborted) return;
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

  const launch = (id: string) => {
    const stop = new AbortController();
    const done = runGeneration(pipeline, id, stop.signal)
      .then(async (finished) => {
        if (finished?.errorCode === 'INTERRUPTED') await retryInterrupted(db, options.provider, [finished]);
      })
      .catch((error: unknown) => log.error({ err: error, generationId: id }, 'generation run crashed'))
      .finally(() => {
        running.delete(id);
        wake();
      });
    running.set(id, { stop, done });
  };

  const recover = () =>
    serviceScope(db)
      .run((tx) => generationStore.interruptLapsed(tx))
      .then(async (interrupted) => {
        for (const row of interrupted) {
          pipeline.bus.publish('generationUpdated', row.id, { status: row.status, phase: row.phase });
          log.warn({ generationId: row.id }, 'lease lapsed: generation interrupted');
        }
        if (await retryInterrupted(db, options.provider, interrupted)) wake();
      })
      .catch((error: unknown) => log.error({ err: error }, 'lease recovery failed'));

  const poll = setInterval(() => {
    void recover();
    wake();
  }, options.pollMs ?? Math.max(500, Math.min(5000, pipeline.leaseMs / 2)));
  void recover().then(wake);

  return {
    wake,
    stop: async () => {
      shutdown.abort();
      clearInterval(poll);
      await scanning;
      for (const { stop } of running.values()) stop.abort('shutdown');
      await Promise.all([...running.values()].map((run) => run.done));
    },
  };
}

/** One automatic retry per generation: a new one with `retryOf`, queued at once. */
async function retryInterrupted(db: Db, provider: GenerationDeps['provider'], rows: GenerationRow[]): Promise<number> {
  const retryable = rows.filter((row) => row.attempt < 2 && row.retryOf === null);
  for (const row of retryable) {
    await serviceScope(db).run((tx) =>
      insertGeneration(
        tx,
        { provider, maxActivePerUser: Number.POSITIVE_INFINITY },
        {
          projectId: row.projectId,
          createdBy: row.createdBy,
          sessionId: row.sessionId,
          parentId: row.parentId,
          prompt: row.prompt,
          retryOf: row.id,
          attempt: row.attempt + 1,
        },
        { checkLimits: false },
      ),
    );
  }
  return retryable.length;
}
