import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../src/db/client.js';
import { generations, projects, users } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { insertGeneration } from '../src/generations/generations.js';
import { createPgBossQueue, GENERATION_QUEUE } from '../src/jobs/pgboss.js';
import { createLogger } from '../src/observability/logger.js';
import { waitUntil } from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { createProject, type TestUser } from './support/fixtures.js';
import {
  fakeFlutter,
  getGeneration,
  type Instance,
  isAlive,
  rawId,
  startAccepted,
  waitForEnd,
} from './support/generation-helpers.js';
import { type PgBossPair, startPgBossPair } from './support/pgboss-pair.js';
import { startTestServer } from './support/server.js';

// QUEUE=pgboss: the job is written with the generation or not at all, a worker in
// another instance takes it, and a second delivery of a job changes nothing.

const logger = createLogger('silent');

describe.skipIf(!testDatabaseUrl)('QUEUE=pgboss (set TEST_DATABASE_URL to run)', () => {
  let database: TestDatabase;
  let api: Instance;
  let owner: TestUser;
  let pair: PgBossPair;
  let admin: postgres.Sql;

  const jobOf = async (id: string) => {
    const [job] = await admin<{ state: string; name: string }[]>`select state, name from pgboss.job where id = ${id}`;
    return job;
  };

  beforeAll(async () => {
    pair = await startPgBossPair('queue');
    ({ database, api, owner } = pair);
    admin = postgres(database.url!, { max: 1, onnotice: () => {} });
  });

  afterAll(async () => {
    await admin?.end();
    await pair?.stop();
  });

  it('runs a generation started on an API instance on a worker instance, through a pg-boss job named by the generation', async () => {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A todo list' });
    const id = rawId(started.id);
    // Sent with the generation, under the user's RLS transaction.
    expect(await jobOf(id)).toMatchObject({ name: GENERATION_QUEUE });
    const done = await waitForEnd(api, owner.client, owner.accessToken, started.id);
    expect(done).toMatchObject({ status: 'SUCCEEDED', error: null });
    expect(done.output.length).toBeGreaterThan(0);
    await waitUntil(async () => (await jobOf(id))?.state === 'completed', 10_000, () => 'the job was not completed');
  });

  it('writes the job in the transaction of the generation: both commit or neither does', async () => {
    const queue = await createPgBossQueue({ url: database.url!, schema: 'pgboss', consumer: false, logger });
    try {
      const seed = await seedProject(database);
      const deps = { provider: { name: 'offline', model: 'offline' }, maxActivePerUser: 10, enqueue: queue.enqueue };
      const values = { projectId: seed.projectId, createdBy: seed.userId, sessionId: randomUUID(), parentId: null, prompt: 'rolled back' };
      let rolledBack: string | undefined;
      await expect(
        serviceScope(database.db).run(async (tx) => {
          rolledBack = (await insertGeneration(tx, deps, values, 'waive')).id;
          throw new Error('the request failed after the insert');
        }),
      ).rejects.toThrow('the request failed');
      expect(rolledBack).toBeDefined();
      expect(await jobOf(rolledBack!)).toBeUndefined();
      expect(await admin`select 1 from generations where id = ${rolledBack!}`).toHaveLength(0);
    } finally {
      await queue.close();
    }
  });

  it('a duplicate delivery of a finished generation does nothing', async () => {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A weather app' });
    const before = await waitForEnd(api, owner.client, owner.accessToken, started.id);
    expect(before.status).toBe('SUCCEEDED');
    const id = rawId(started.id);
    const counts = async () =>
      rowsOf<{ chunks: number; messages: number; generations: number }>(
        await database.db.execute(sql`select
          (select count(*)::int from generation_chunks where generation_id = ${id}) as chunks,
          (select count(*)::int from conversation_messages where generation_id = ${id}) as messages,
          (select count(*)::int from generations where project_id = ${rawId(project.id)}) as generations`),
      )[0];
    const countsBefore = await counts();

    // pg-boss delivers at least once: a second job for the same generation.
    const queue = await createPgBossQueue({ url: database.url!, schema: 'pgboss', consumer: false, logger });
    const duplicate = await queue.boss.send(GENERATION_QUEUE, { generationId: id });
    await queue.close();
    await waitUntil(async () => (await jobOf(duplicate!))?.state === 'completed', 15_000, () => 'the duplicate job was not taken');

    const after = await getGeneration(owner.client, started.id);
    expect(after).toEqual(before);
    expect(await counts()).toEqual(countsBefore);
  });

  it('still runs a QUEUED generation whose job is gone (the table scan as a safety net)', async () => {
    const seed = await seedProject(database);
    // Queued a minute ago, no job: as if its job had been lost.
    const [row] = await serviceScope(database.db).run((tx) =>
      tx
        .insert(generations)
        .values({
          projectId: seed.projectId,
          createdBy: seed.userId,
          sessionId: randomUUID(),
          prompt: 'A stranded generation',
          provider: 'offline',
          model: 'offline',
          createdAt: new Date(Date.now() - 60_000),
        })
        .returning(),
    );
    expect(await jobOf(row!.id)).toBeUndefined();
    await waitUntil(
      async () => (await admin<{ status: string }[]>`select status from generations where id = ${row!.id}`)[0]?.status === 'SUCCEEDED',
      30_000,
      () => 'the stranded generation did not run',
      200,
    );
  });
});

describe.skipIf(!testDatabaseUrl)('QUEUE=pgboss, a worker with every slot busy (set TEST_DATABASE_URL to run)', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('leaves a new job to an idle worker instead of taking it and waiting for a slot', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.close());
    const admin = postgres(database.url!, { max: 1, onnotice: () => {} });
    cleanups.push(() => admin.end());
    const sender = await createPgBossQueue({ url: database.url!, schema: 'pgboss', consumer: false, logger });
    cleanups.push(() => sender.close());
    const statusOf = async (id: string) => (await admin<{ status: string }[]>`select status from generations where id = ${id}`)[0]?.status;
    const seed = await seedProject(database);
    const queued = (prompt: string) =>
      serviceScope(database.db).run(async (tx) => {
        const deps = { provider: { name: 'offline', model: 'offline' }, maxActivePerUser: 10, enqueue: sender.enqueue };
        const values = { projectId: seed.projectId, createdBy: seed.userId, sessionId: randomUUID(), parentId: null, prompt };
        return (await insertGeneration(tx, deps, values, 'waive')).id;
      });
    const worker = async (mode: 'hang' | 'ok') => {
      const flutter = await fakeFlutter(mode);
      cleanups.push(async () => {
        const pid = Number(await readFile(flutter.pidFile, 'utf8').catch(() => '0'));
        if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
        await flutter.remove();
      });
      const server = await startTestServer(
        { DATABASE_URL: database.url!, QUEUE: 'pgboss', EVENTS: 'postgres', ROLE: 'worker', WORKER_CONCURRENCY: '1', FLUTTER_BIN: flutter.bin },
        { database },
      );
      cleanups.push(() => server.stop());
      return server;
    };

    // The busy worker: its one slot holds a build that never ends.
    const busy = await worker('hang');
    const holding = await queued('A build that never ends');
    await waitUntil(async () => (await statusOf(holding)) === 'RUNNING', 30_000, () => 'the busy worker did not take its first run');

    // A job sent while the busy worker is the only consumer, then an idle worker.
    const waiting = await queued('A todo list');
    const idle = await worker('ok');
    await waitUntil(async () => (await statusOf(waiting)) === 'SUCCEEDED', 30_000, () => `the job was not run by the idle worker (${waiting})`);

    // Run on the idle worker (its workspace is there) from the one delivery of its job: the busy worker never took it.
    expect(existsSync(join(idle.dataDir, 'workspaces', seed.projectId, waiting))).toBe(true);
    expect(existsSync(join(busy.dataDir, 'workspaces', seed.projectId, waiting))).toBe(false);
    expect(await admin`select state, retry_count from pgboss.job where id = ${waiting}`).toEqual([{ state: 'completed', retry_count: 0 }]);
    expect(await statusOf(holding)).toBe('RUNNING');
  });
});

/** A user and a FLUTTER project written directly (the use-cases are not what these tests are about). */
async function seedProject(database: TestDatabase) {
  return serviceScope(database.db).run(async (tx) => {
    const userId = randomUUID();
    await tx.insert(users).values({ id: userId, email: `queue-${userId}@example.com` });
    const [project] = await tx.insert(projects).values({ ownerId: userId, name: 'queue', target: 'FLUTTER' }).returning();
    return { userId, projectId: project!.id };
  });
}
