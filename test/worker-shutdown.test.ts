import { eq, sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Environment, parseConfig } from '../src/config.js';
import { rowsOf } from '../src/db/client.js';
import { projects } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { createMemoryEventBus, type EventBus, listen, type StatusEvent } from '../src/events/bus.js';
import { TERMINAL_STATUSES } from '../src/generations/status.js';
import { generationStore } from '../src/generations/store.js';
import type { JobQueue } from '../src/jobs/queue.js';
import { MAX_HANDED_BACK_ATTEMPTS, startWorker } from '../src/jobs/worker.js';
import { createLlmProvider } from '../src/llm/index.js';
import { createLogger } from '../src/observability/logger.js';
import { databaseKind, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { fakeFlutter, type FakeFlutterMode, queuedOnApiInstance, rawId } from './support/generation-helpers.js';
import { unsandboxedBuilds } from './support/server.js';

// The worker's shutdown (a scan or a queue consumer still stopping when it is asked to stop,
// a second stop that hurries it) and runs in archived projects: a generation queued there is
// never run, and a run ended INTERRUPTED there is not retried. Each test queues a generation
// through an API instance (ROLE=api) and drives a worker of its own on the same database.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => (resolve = done));
  return { promise, resolve };
}

/** A generation queued by a new user in a new FLUTTER project, and a worker of the test's own (concurrency 1) with its own event bus. */
async function queuedWithWorker(prompt: string, flutterMode: FakeFlutterMode, options: { queue?: JobQueue; beforeWorker?: (ids: { id: string; projectId: string; database: TestDatabase }) => Promise<void> } = {}) {
  const { database, dataDir, started, project } = await queuedOnApiInstance(cleanups as (() => Promise<void>)[], prompt);
  const id = rawId(started.id);
  const projectId = rawId(project.id);
  await options.beforeWorker?.({ id, projectId, database });
  return { database, dataDir, id, projectId, ...(await workerOn(database, dataDir, flutterMode, options.queue)) };
}

/** A worker of the test's own on `database` (concurrency 1), with its own event bus; stopped after the test. */
async function workerOn(database: TestDatabase, dataDir: string, flutterMode: FakeFlutterMode, queue?: JobQueue) {
  const flutter = await fakeFlutter(flutterMode);
  cleanups.push(() => flutter.remove());
  const env: Environment = { LOG_LEVEL: 'silent', OFFLINE_CHUNK_DELAY_MS: '0', DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin, ...unsandboxedBuilds };
  const config = parseConfig(env);
  const llm = await createLlmProvider(config.llm);
  const bus = createMemoryEventBus();
  const worker = startWorker({
    provider: llm,
    concurrency: 1,
    queue,
    pipeline: { db: database.db, bus, llm, logger: createLogger('silent'), workspaces: config.workspaces, toolchain: config.toolchain, leaseMs: config.generations.leaseMs, budgetReservationTokens: 0 },
  });
  cleanups.push(() => worker.stop({ graceMs: 0 }));
  return { worker, bus };
}

/** The first status event of `id` on `bus` that satisfies `predicate`. */
function statusOn(bus: EventBus, id: string, predicate: (update: StatusEvent) => boolean): Promise<StatusEvent> {
  return new Promise((resolve) => {
    const stop = listen(bus, 'generationUpdated', id, (update) => {
      if (!predicate(update)) return;
      stop();
      resolve(update);
    });
  });
}

/** As a worker that died mid-run leaves `id`: RUNNING, its lease lapsed, no stop asked. */
async function leftByDeadWorker(database: TestDatabase, id: string) {
  await database.db.execute(sql`update generations set status = 'RUNNING', phase = 'GENERATING', started_at = now(), lease_expires_at = now() - interval '1 minute' where id = ${id}`);
}

/** The row of `id` once it has ended, seen through `bus` (or at once when it had ended already). */
async function endOf(database: TestDatabase, bus: EventBus, id: string) {
  const ended = statusOn(bus, id, (update) => TERMINAL_STATUSES.includes(update.status));
  const row = await rowOf(database, id);
  if (!row || !TERMINAL_STATUSES.includes(row.status)) await ended;
  return rowOf(database, id);
}

async function rowOf(database: TestDatabase, id: string) {
  return serviceScope(database.db).run((tx) => generationStore.find(tx, id));
}

/** The automatic retry of `id`, which the test expects there. */
async function retryOf(database: TestDatabase, id: string): Promise<string> {
  const [row] = rowsOf<{ id: string }>(await database.db.execute(sql`select id from generations where retry_of = ${id}`));
  expect(row, `a retry of ${id}`).toBeDefined();
  return row!.id;
}

async function retriesOf(database: TestDatabase, id: string): Promise<number> {
  const [row] = rowsOf<{ n: number }>(await database.db.execute(sql`select count(*)::int as n from generations where retry_of = ${id}`));
  return row!.n;
}

/** Archived by a direct update, as no use-case would: its generations are left as they were (none asked to stop). */
async function archiveBehindTheUseCase(database: TestDatabase, projectId: string) {
  await serviceScope(database.db).run((tx) => tx.update(projects).set({ archivedAt: new Date() }).where(eq(projects.id, projectId)));
}

describe(`a worker asked to stop (${databaseKind})`, () => {
  it('launches nothing from a scan that was under way: the generation stays QUEUED, with no retry made', async () => {
    const scanning = deferred();
    const release = deferred();
    const queuedIds = generationStore.queuedIds.bind(generationStore);
    // The worker's first scan is held until the worker has been told to stop.
    const spy = vi.spyOn(generationStore, 'queuedIds').mockImplementationOnce(async (...args) => {
      scanning.resolve();
      await release.promise;
      return queuedIds(...args);
    });
    cleanups.push(async () => spy.mockRestore());
    const { database, id, worker } = await queuedWithWorker('Queued while the worker stops', 'ok');

    await scanning.promise;
    const stopped = worker.stop({ graceMs: 0 });
    release.resolve();
    await stopped;

    // Launched, it would have been claimed and handed back at once: FAILED/INTERRUPTED with a retry.
    expect(await rowOf(database, id)).toMatchObject({ status: 'QUEUED', startedAt: null });
    expect(await retriesOf(database, id)).toBe(0);
  });

  it('takes a second stop with no grace, sent while the queue consumer is still stopping: the run is handed back without the grace', async () => {
    const consumerStopped = deferred();
    const queue: JobQueue = { kind: 'memory', scanMinAgeMs: 0, stopConsuming: () => consumerStopped.promise, close: async () => {} };
    const { database, id, worker, bus } = await queuedWithWorker('Building when the worker stops', 'hang', { queue });
    const building = statusOn(bus, id, (update) => update.phase === 'BUILDING');
    worker.wake(id);
    await building; // its build never ends

    // An hour of grace: only the second stop can end it before the test's timeout.
    const stopping = worker.stop({ graceMs: 3_600_000 });
    void worker.stop({ graceMs: 0 });
    consumerStopped.resolve();
    await stopping;

    expect(await rowOf(database, id)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
    expect(await retriesOf(database, id)).toBe(1);
  });
});

describe(`runs handed back by planned stops (${databaseKind})`, () => {
  /** Starts a worker that takes `id` into its (never ending) build, then stops it with no grace: the run is handed back. */
  const handedBack = async (database: TestDatabase, dataDir: string, id: string) => {
    const { worker, bus } = await workerOn(database, dataDir, 'hang');
    const building = statusOn(bus, id, (update) => update.phase === 'BUILDING');
    worker.wake(id);
    await building;
    await worker.stop({ graceMs: 0 });
    expect(await rowOf(database, id)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
  };

  /** A generation queued through an API instance, no worker yet. */
  const queued = async (prompt: string) => {
    const { database, dataDir, started } = await queuedOnApiInstance(cleanups as (() => Promise<void>)[], prompt);
    return { database, dataDir, id: rawId(started.id) };
  };

  it('retries a run each time a restart hands it back, and its chain keeps its one retry for a crash', async () => {
    const { database, dataDir, id } = await queued('Through a rolling restart');
    // Two restarts in a row (a rolling deploy), each while the run builds.
    await handedBack(database, dataDir, id);
    expect(await rowOf(database, id)).toMatchObject({ errorMessage: 'The worker stopped before this generation finished.' });
    const second = await retryOf(database, id);
    await handedBack(database, dataDir, second);
    const third = await retryOf(database, second);
    expect(await rowOf(database, third)).toMatchObject({ status: 'QUEUED', attempt: 3, retrySpent: false });

    // Then its worker dies mid-run: lease recovery ends it and still retries it, once.
    await leftByDeadWorker(database, third);
    const { bus } = await workerOn(database, dataDir, 'ok');
    await endOf(database, bus, third);
    const fourth = await retryOf(database, third);
    expect(await endOf(database, bus, fourth)).toMatchObject({ status: 'SUCCEEDED', attempt: 4, retrySpent: true });
  });

  it("retries a user's retry handed back by a restart, but not once its worker dies", async () => {
    const { database, dataDir, id } = await queued('A retry of the user');
    // As retryGeneration writes a user's retry: no automatic retry after a crash.
    await database.db.execute(sql`update generations set retry_spent = true where id = ${id}`);
    await handedBack(database, dataDir, id);
    const retry = await retryOf(database, id);
    expect(await rowOf(database, retry)).toMatchObject({ status: 'QUEUED', attempt: 2, retrySpent: true });

    await leftByDeadWorker(database, retry);
    const { bus } = await workerOn(database, dataDir, 'ok');
    expect(await endOf(database, bus, retry)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED', errorMessage: 'The worker running this generation stopped.' });
    expect(await retriesOf(database, retry)).toBe(0);
  });

  it(`stops retrying a run handed back ${MAX_HANDED_BACK_ATTEMPTS} times`, async () => {
    const { database, dataDir, id } = await queued('Through a restart loop');
    await database.db.execute(sql`update generations set attempt = ${MAX_HANDED_BACK_ATTEMPTS} where id = ${id}`);
    await handedBack(database, dataDir, id);
    expect(await retriesOf(database, id)).toBe(0);
  });
});

describe(`generations of an archived project (${databaseKind})`, () => {
  it('a QUEUED one the archive missed ends CANCELLED when a worker comes to it, never RUNNING', async () => {
    const { database, id, worker, bus } = await queuedWithWorker('Queued, then archived', 'ok', {
      beforeWorker: ({ database, projectId }) => archiveBehindTheUseCase(database, projectId),
    });
    const statuses: string[] = [];
    listen(bus, 'generationUpdated', id, (update) => statuses.push(update.status));

    worker.wake(id);
    // The grace lets a run that was claimed go to its end.
    await worker.stop({ graceMs: 3_600_000 });

    expect(await rowOf(database, id)).toMatchObject({ status: 'CANCELLED', phase: 'DONE', startedAt: null, finishedAt: expect.any(Date) });
    expect(statuses).not.toContain('RUNNING');
  });

  it('lease recovery ends a lapsed run there FAILED/INTERRUPTED and queues no retry', async () => {
    const { database, id, worker, bus } = await queuedWithWorker('Its worker died, then the project was archived', 'ok', {
      beforeWorker: async ({ database, id, projectId }) => {
        await leftByDeadWorker(database, id);
        await archiveBehindTheUseCase(database, projectId);
      },
    });
    await statusOn(bus, id, (update) => update.status === 'FAILED'); // published once recovery committed
    await worker.stop({ graceMs: 0 });

    expect(await rowOf(database, id)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
    expect(await retriesOf(database, id)).toBe(0);
  });

  it('a run handed back there (the worker stopping) ends FAILED/INTERRUPTED and queues no retry', async () => {
    const { database, id, projectId, worker, bus } = await queuedWithWorker('Building when its project is archived', 'hang');
    const building = statusOn(bus, id, (update) => update.phase === 'BUILDING');
    worker.wake(id);
    await building;
    await archiveBehindTheUseCase(database, projectId);
    await worker.stop({ graceMs: 0 });

    expect(await rowOf(database, id)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
    expect(await retriesOf(database, id)).toBe(0);
  });
});

describe.skipIf(!testDatabaseUrl)('an archive under way when lease recovery ends a run (set TEST_DATABASE_URL to run)', () => {
  it('queues no retry, and does not wait for the archive (which may be waiting for the run)', async () => {
    let releaseArchive!: () => void;
    let archiving!: Promise<unknown>;
    const { database, id, worker, bus } = await queuedWithWorker('Ended while its project is being archived', 'ok', {
      beforeWorker: async ({ database, id, projectId }) => {
        await leftByDeadWorker(database, id);
        // An archive on a connection of its own, holding the project's archive lock until released.
        const admin = postgres(database.url!, { max: 1, onnotice: () => {} });
        cleanups.push(() => admin.end());
        const locked = deferred();
        const released = new Promise<void>((resolve) => (releaseArchive = resolve));
        archiving = admin.begin(async (tx) => {
          await tx`select pg_advisory_xact_lock(hashtextextended(${`kiln.project-archive:${projectId}`}, 0))`;
          await tx`update projects set archived_at = now() where id = ${projectId}`;
          locked.resolve();
          await released;
        });
        cleanups.push(async () => {
          releaseArchive();
          await archiving.catch(() => {});
        });
        await locked.promise;
      },
    });
    // Recovery ends the run while the archive holds its lock: waiting for it would never end.
    await statusOn(bus, id, (update) => update.status === 'FAILED');
    releaseArchive();
    await archiving;
    await worker.stop({ graceMs: 0 });

    expect(await rowOf(database, id)).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
    expect(await retriesOf(database, id)).toBe(0);
  });
});
