import { describe, expect, it } from 'vitest';
import { estimateTokens } from '../src/generations/budget.js';
import { ProjectDocument, SetProjectBudgetDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, expectTypename } from './support/fixtures.js';
import { startAccepted, startGeneration, waitForEnd } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';

// A project's monthly limit holds when several runs start and stream at once: each
// start reserves an estimate (BUDGET_RESERVATION_TOKENS) in its insert's transaction,
// runs take more under the project's lock as they stream, and the end settles the
// reservation to the usage. Starts that cannot fit are refused with BudgetExceededError.

/** What a start reserves: more than one offline run of the prompt below needs. */
const RESERVATION = 6_000;
/** The offline provider's chunks are at most 120 characters: what a stopped run spends past its reservation. */
const LAST_CHUNK_TOKENS = estimateTokens(120);

describe(`budgets under concurrency (${databaseKind})`, () => {
  const suite = useGenerationServer({
    OFFLINE_CHUNK_DELAY_MS: '2',
    BUDGET_RESERVATION_TOKENS: String(RESERVATION),
    // Ten at once, all running together.
    WORKER_CONCURRENCY: '10',
    MAX_ACTIVE_GENERATIONS_PER_USER: '20',
    RATE_LIMIT_GENERATIONS_PER_USER: '100/600',
    RATE_LIMIT_GENERATIONS_PER_IP: 'off',
  });

  it('keeps a project within its limit when 10 runs start at once; the starts that cannot fit get BudgetExceededError', { timeout: 120_000 }, async () => {
    const prompt = 'A packing list for a weekend of hiking';
    // What one run of this prompt costs, on a project without a limit.
    const probe = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const one = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, (await startAccepted(suite.owner.client, { projectId: probe.id, prompt })).id);
    expect(one.status).toBe('SUCCEEDED');
    const perRun = one.usage.inputTokens + one.usage.outputTokens;
    expect(perRun, 'a reservation should cover one run of the prompt').toBeLessThan(RESERVATION);

    // Room for two reservations and half a run more: its prompt and half its answer. Less, and
    // the third run could not take even its prompt, so it would stop at once and hand what it
    // held to the next start, which would stop at once too, and so on: every start accepted.
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const limit = 2 * RESERVATION + one.usage.inputTokens + LAST_CHUNK_TOKENS + Math.floor(one.usage.outputTokens / 2);
    expectTypename(
      (await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: limit } })).setProjectBudget,
      'Project',
    );

    const results = await Promise.all(Array.from({ length: 10 }, () => startGeneration(suite.owner.client, { projectId: project.id, prompt })));
    const accepted = results.filter((result) => result.__typename === 'Generation');
    const refused = results.filter((result) => result.__typename !== 'Generation');
    expect(accepted.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const result of refused) expect(result.__typename).toBe('BudgetExceededError');

    const ended = await Promise.all(accepted.map((generation) => waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id, 90_000)));
    for (const generation of ended) {
      expect(generation.status === 'SUCCEEDED' || generation.error?.code === 'BUDGET_EXCEEDED', JSON.stringify(generation.error)).toBe(true);
    }
    expect(ended.some((generation) => generation.status === 'SUCCEEDED')).toBe(true);

    // The month's usage is what the runs spent, and within the limit but for the last
    // chunk of each run the budget stopped.
    const stopped = ended.filter((generation) => generation.error?.code === 'BUDGET_EXCEEDED').length;
    const { project: after } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    const used = after!.usage.inputTokens + after!.usage.outputTokens;
    expect(used).toBe(ended.reduce((sum, generation) => sum + generation.usage.inputTokens + generation.usage.outputTokens, 0));
    expect(used).toBeLessThanOrEqual(limit + stopped * LAST_CHUNK_TOKENS);
  });
});
