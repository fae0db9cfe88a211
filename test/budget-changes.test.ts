import { sql } from 'drizzle-orm';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { rowsOf, type Tx } from '../src/db/client.js';
import { generations } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { estimateTokens, reserveAtStart } from '../src/generations/budget.js';
import { projectStore } from '../src/projects/store.js';
import { SetProjectBudgetDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind } from './support/db.js';
import { createProject, expectTypename, signUp } from './support/fixtures.js';
import { fakeFlutter, firstChunks, rawId, startAccepted, startGeneration, startInstance, tempDir, waitForEnd } from './support/generation-helpers.js';
import type { GraphQLClient } from './support/server.js';
import { useGenerationServer } from './support/suite-server.js';

// A run holds to its project's budget as it stands, not as it stood when the run began: a
// limit set or lowered while it streams stops it within a reservation step, and a run is
// charged to the month it was created in, also once the next month has begun.

/** The offline provider's chunks are at most 120 characters: what a stopped run spends past the limit. */
const LAST_CHUNK_TOKENS = estimateTokens(120);

const setBudget = async (client: GraphQLClient, projectId: string, monthlyTokenLimit: number | null) =>
  expectTypename((await client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId, monthlyTokenLimit } })).setProjectBudget, 'Project');

describe(`a budget changed during a run (${databaseKind})`, () => {
  // Chunks come slowly, so the change lands mid-stream; a small step makes the run ask often.
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '100', BUDGET_RESERVATION_TOKENS: '20' });

  /** Starts a run, changes the project's limit once two chunks have streamed, and returns how the run ended. */
  const changedMidRun = async (projectId: string, limit: number) => {
    const started = await startAccepted(suite.owner.client, { projectId, prompt: 'A packing list for a weekend of hiking' });
    await firstChunks(suite.server.url, suite.owner.accessToken, started.id, 2);
    await setBudget(suite.owner.client, projectId, limit);
    return waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
  };

  it('stops a run of a project without a limit when one is set while it streams: FAILED/BUDGET_EXCEEDED, nothing built', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const stopped = await changedMidRun(project.id, 50);
    expect(stopped).toMatchObject({ status: 'FAILED', phase: 'DONE', error: { code: 'BUDGET_EXCEEDED' } });
    expect(stopped.error?.message).toContain('(50 tokens)');
    expect(stopped.output).not.toBe('');
    expect(stopped.files).toEqual([]);
    expect(stopped.buildSteps).toEqual([]);
  });

  it('refuses a start when a limit is set between its read of the project and its budget decision', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const projectId = rawId(project.id);
    // The month has spent 1,000 tokens already, with no limit.
    const [owner] = rowsOf<{ id: string }>(await suite.server.database.db.execute(sql`select id from users where email = ${suite.owner.email}`));
    await suite.server.database.db.insert(generations).values({
      projectId,
      createdBy: owner!.id,
      sessionId: randomUUID(),
      prompt: 'Earlier',
      provider: 'offline',
      model: 'offline',
      status: 'SUCCEEDED',
      phase: 'DONE',
      inputTokens: 500,
      outputTokens: 500,
      startedAt: new Date(),
      finishedAt: new Date(),
    });
    // The start reads the project (no limit), then a limit of 10 is set, as a commit right after that read would be seen.
    const find = projectStore.find.bind(projectStore);
    const spy = vi.spyOn(projectStore, 'find').mockImplementationOnce(async (tx: Tx, id: string) => {
      const row = await find(tx, id);
      await tx.execute(sql`reset role`);
      await tx.execute(sql`update projects set monthly_token_limit = 10 where id = ${projectId}`);
      await tx.execute(sql`select set_config('role', 'authenticated', true)`);
      return row;
    });
    try {
      const refused = expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'A packing list' }), 'BudgetExceededError');
      expect(refused).toMatchObject({ limit: 10 });
    } finally {
      spy.mockRestore();
    }
  });

  it("counts a generation created at the very start of the month in that month's usage", async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const monthStart = sql`date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'`;
    await suite.server.database.db.execute(sql`
      insert into generations (project_id, created_by, session_id, prompt, status, phase, provider, model, input_tokens, output_tokens, created_at, finished_at)
      select ${rawId(project.id)}, id, gen_random_uuid(), 'at midnight', 'SUCCEEDED', 'DONE', 'offline', 'offline', 300, 200, ${monthStart}, ${monthStart}
      from users where email = ${suite.owner.email}`);
    const budgeted = await setBudget(suite.owner.client, project.id, 1_000);
    expect(budgeted.usage).toEqual({ inputTokens: 300, outputTokens: 200, generationCount: 1 });
    // And the budget counts it: with the limit at the 500 it spent, a start finds no room.
    await setBudget(suite.owner.client, project.id, 500);
    expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'A packing list' }), 'BudgetExceededError');
  });

  it("decides a start by the database's month, the one its generation is stamped in, whatever the server's clock says", async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    await suite.server.database.db.execute(sql`
      insert into generations (project_id, created_by, session_id, prompt, status, phase, provider, model, input_tokens, output_tokens, finished_at)
      select ${rawId(project.id)}, id, gen_random_uuid(), 'spent this month', 'SUCCEEDED', 'DONE', 'offline', 'offline', 300, 200, now()
      from users where email = ${suite.owner.email}`);
    await setBudget(suite.owner.client, project.id, 500);
    // The server's clock already in the next month (a start that waited on the lock past midnight, a skewed host).
    const now = new Date();
    vi.setSystemTime(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1, 0, 1)));
    try {
      // PostgreSQL keeps its own clock: a generation started now is stamped in the month of the 500 spent, which
      // leaves no room. PGlite's follows the server's, so it would be stamped in the next month, which has room.
      const [{ sameMonth }] = rowsOf<{ sameMonth: boolean }>(
        await suite.server.database.db.execute(sql`select date_trunc('month', now(), 'UTC') = date_trunc('month', created_at, 'UTC') as "sameMonth"
          from generations where project_id = ${rawId(project.id)}`),
      ) as [{ sameMonth: boolean }];
      expect(sameMonth).toBe(databaseKind === 'postgres');
      const start = serviceScope(suite.server.database.db).run((tx) => reserveAtStart(tx, rawId(project.id), { estimate: 100, needed: 1 }, (limit, taken) => new Error(`over ${limit}: ${taken.spent} spent`)));
      if (sameMonth) await expect(start).rejects.toThrow('over 500: 500 spent');
      else await expect(start).resolves.toBe(100);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stops a run when its limit is lowered while it streams', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    await setBudget(suite.owner.client, project.id, 1_000_000);
    const stopped = await changedMidRun(project.id, 50);
    expect(stopped).toMatchObject({ status: 'FAILED', phase: 'DONE', error: { code: 'BUDGET_EXCEEDED' } });
    expect(stopped.error?.message).toContain('(50 tokens)');
    expect(stopped.files).toEqual([]);
  });
});

describe(`a run that streams on into the next month (${databaseKind})`, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("is charged to the month it was created in: that month's usage stops it", { timeout: 60_000 }, async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.close());
    const data = await tempDir('budget-month');
    cleanups.push(() => data.remove());
    const env = { DATA_DIR: data.path, BUDGET_RESERVATION_TOKENS: '100' };
    // Queued on an API instance alone, so the test can move it into last month before a worker claims it.
    const api = await startInstance(database, { ...env, ROLE: 'api' });
    cleanups.push(() => api.stop());
    const owner = await signUp(api);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const limit = 100_000;
    await setBudget(owner.client, project.id, limit);
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list for a weekend of hiking' });
    const id = rawId(started.id);

    // Last month: the run was created then (as a run that began before midnight on the last
    // day is), and earlier runs of that month spent all but 200 tokens of the limit.
    const lastMonth = sql`(date_trunc('month', now() at time zone 'UTC') - interval '2 days') at time zone 'UTC'`;
    await database.db.execute(sql`update generations set created_at = ${lastMonth} where id = ${id}`);
    await database.db.execute(sql`
      insert into generations (project_id, created_by, session_id, prompt, status, phase, provider, model, input_tokens, output_tokens, created_at, finished_at)
      select project_id, created_by, gen_random_uuid(), 'earlier that month', 'SUCCEEDED', 'DONE', provider, model, ${limit - 200}, 0, ${lastMonth}, ${lastMonth}
      from generations where id = ${id}`);

    const flutter = await fakeFlutter('ok');
    cleanups.push(() => flutter.remove());
    const worker = await startInstance(database, { ...env, ROLE: 'worker', FLUTTER_BIN: flutter.bin });
    cleanups.push(() => worker.stop());
    const ended = await waitForEnd(worker, owner.client, owner.accessToken, started.id);
    expect(ended).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    expect(ended.error?.message).toContain(`${limit} tokens`);

    // Last month ends within its limit, but for the chunk that stopped the run.
    const [month] = rowsOf<{ used: number }>(
      await database.db.execute(sql`select sum(input_tokens + output_tokens)::int as used from generations
        where project_id = ${rawId(project.id)} and created_at < date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'`),
    );
    expect(month!.used).toBeLessThanOrEqual(limit + LAST_CHUNK_TOKENS);
  });
});
