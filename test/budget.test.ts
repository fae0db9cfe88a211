import { describe, expect, it } from 'vitest';
import { budgetMeter, BudgetStop, estimateTokens } from '../src/generations/budget.js';
import { leastPromptCharacters } from '../src/generations/prompt.js';
import { getTarget } from '../src/toolchain/targets.js';
import { ProjectDocument, SetProjectBudgetDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, document, expectTypename, signUp } from './support/fixtures.js';
import { filesUnder, rawId, replayChunks, startAccepted, startGeneration, waitForEnd } from './support/generation-helpers.js';
import { useTestServer } from './support/server.js';
import { useGenerationServer } from './support/suite-server.js';

// A project's monthly token budget holds during a run, not only at its start: the
// pipeline estimates tokens as the output streams (characters / 4) and stops the run
// with FAILED/BUDGET_EXCEEDED before it spends past the limit.

describe('the budget meter', () => {
  /** A run holding `held` tokens of a month that has nothing more to give; without a limit, it gets whatever it asks for. */
  const holding = (limit: number | null, held: number, spentBefore = 0) => ({
    limit,
    spentBefore,
    reserved: () => held,
    reserve: async (total: number) => (limit === null ? total : held),
  });

  /** Counts `text`, then holds the run to its budget, as answer.ts does with each piece of text. */
  const add = async (meter: ReturnType<typeof budgetMeter>, text: string) => {
    meter.count(text);
    await meter.check();
  };

  it('lets a run spend what it holds and stops it at the first chunk past it, with its estimated usage', async () => {
    const meter = budgetMeter(holding(100, 60), 200); // 50 input tokens
    await add(meter, 'x'.repeat(40)); // 10 output tokens: 60 in all
    expect(meter.usage()).toEqual({ inputTokens: 50, outputTokens: 10 });
    const stop = await add(meter, 'y').then(() => undefined, (error: unknown) => error);
    expect(stop).toBeInstanceOf(BudgetStop);
    expect((stop as BudgetStop).message).toContain('100 tokens');
    expect(meter.usage()).toEqual({ inputTokens: 50, outputTokens: 11 });
  });

  it('asks for more before passing what it holds, and goes on when it gets it', async () => {
    const asked: number[] = [];
    let held = 55;
    const meter = budgetMeter({ limit: 1000, spentBefore: 5, reserved: () => held, reserve: async (total) => (asked.push(total), (held = total + 10)) }, 200);
    await meter.start(); // 5 + 50 = 55: covered
    await add(meter, 'x'.repeat(8)); // 57: asks
    await add(meter, 'x'.repeat(8)); // 59: covered by what it got
    expect(asked).toEqual([57]);
  });

  it('holds a run to what it is told it spent, where that is more than the estimate: thinking streams no text', async () => {
    const meter = budgetMeter(holding(100, 60), 200); // 50 input tokens
    meter.count('x'.repeat(4)); // 1 output token by the estimate
    await meter.check({ inputTokens: 50, outputTokens: 10 }); // covered
    const stop = await meter.check({ inputTokens: 50, outputTokens: 11 }).then(() => undefined, (error: unknown) => error);
    expect(stop).toBeInstanceOf(BudgetStop);
  });

  it('never stops a project without a limit', async () => {
    const meter = budgetMeter(holding(null, 0, 10 ** 9), 10 ** 6);
    await add(meter, 'z'.repeat(10 ** 6));
    expect(meter.usage()).toEqual({ inputTokens: estimateTokens(10 ** 6), outputTokens: estimateTokens(10 ** 6) });
  });
});

describe(`budgets during a run (${databaseKind})`, () => {
  // Chunks come at a pace, as from a model, so the stop lands mid-stream.
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '2' });

  const setBudget = async (projectId: string, monthlyTokenLimit: number) =>
    expectTypename(
      (await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId, monthlyTokenLimit } })).setProjectBudget,
      'Project',
    );

  it('stops a run mid-stream when its budget runs out: FAILED/BUDGET_EXCEEDED, the output so far kept, nothing built', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const prompt = 'A packing list for a weekend of hiking';
    const full = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, (await startAccepted(suite.owner.client, { projectId: project.id, prompt })).id);
    expect(full.status).toBe('SUCCEEDED');
    const { inputTokens, outputTokens } = full.usage;
    expect(outputTokens).toBeGreaterThan(100);

    // Enough for the same request's input and about half its output.
    const limit = inputTokens + outputTokens + inputTokens + Math.floor(outputTokens / 2);
    await setBudget(project.id, limit);
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const stopped = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(stopped).toMatchObject({ status: 'FAILED', phase: 'DONE', error: { code: 'BUDGET_EXCEEDED' } });
    expect(stopped.error?.message).toContain(`${limit} tokens`);
    // It got about halfway: a real part of the output, persisted and replayable, and not all of it.
    expect(stopped.output.length).toBeGreaterThan(full.output.length / 4);
    expect(stopped.output.length).toBeLessThan(full.output.length);
    expect(full.output.startsWith(stopped.output)).toBe(true);
    expect((await replayChunks(suite.server.url, suite.owner.accessToken, started.id)).map((c) => c.text).join('')).toBe(stopped.output);
    // Nothing was written or built.
    expect(stopped.files).toEqual([]);
    expect(stopped.buildSteps).toEqual([]);
    expect(await filesUnder(`${suite.server.workspacesDir}/${rawId(project.id)}/${rawId(started.id)}`)).toEqual([]);

    // What it spent is recorded, so the month's usage lands at the limit, not past it by more than one chunk.
    expect(stopped.usage.inputTokens).toBe(inputTokens);
    const { project: after } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    const used = after!.usage.inputTokens + after!.usage.outputTokens;
    expect(used).toBeGreaterThan(limit);
    expect(used).toBeLessThanOrEqual(limit + estimateTokens(120));

    // And the next start is refused up front.
    expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt }), 'BudgetExceededError');
  });

  it('fails a run whose whole prompt is over what is left, before asking the model for anything', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const first = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, (await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A dice roller' })).id);
    const used = first.usage.inputTokens + first.usage.outputTokens;
    // Enough for what a start can know its prompt takes (a run's files come later), so the start is accepted.
    const prompt = 'A dice roller with two dice';
    await setBudget(project.id, used + estimateTokens(leastPromptCharacters(getTarget('FLUTTER'), prompt)));

    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const stopped = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    expect(stopped).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' }, output: '' });
    // Nothing was spent, so nothing is counted.
    expect(stopped.usage).toEqual({ inputTokens: 0, outputTokens: 0 });
  });
});

describe(`setting a budget (${databaseKind})`, () => {
  const server = useTestServer();

  type Budget = { monthlyTokenLimit: number | null };
  const SetBudget = document<
    { setProjectBudget: { __typename: string; budget?: Budget; fieldErrors?: { path: string[]; message: string }[] } },
    { input: { projectId: string; monthlyTokenLimit?: number | null } }
  >(`mutation SetBudget($input: SetProjectBudgetInput!) {
    setProjectBudget(input: $input) {
      __typename
      ... on Project { budget { monthlyTokenLimit } }
      ... on ValidationError { fieldErrors { path message } }
    }
  }`);
  const BudgetOf = document<{ project: { budget: Budget } | null }, { id: string }>('query BudgetOf($id: ID!) { project(id: $id) { budget { monthlyTokenLimit } } }');

  it('removes the limit only with an explicit null: a left-out monthlyTokenLimit is a ValidationError that keeps the cap', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    const set = async (monthlyTokenLimit: { monthlyTokenLimit?: number | null }) =>
      (await owner.client.expectNoErrors(SetBudget, { input: { projectId: project.id, ...monthlyTokenLimit } })).setProjectBudget;
    const budget = async () => (await owner.client.expectNoErrors(BudgetOf, { id: project.id })).project?.budget;

    expect(await set({ monthlyTokenLimit: 5000 })).toEqual({ __typename: 'Project', budget: { monthlyTokenLimit: 5000 } });
    // A JavaScript client's undefined: JSON drops the field.
    expect(await set({ monthlyTokenLimit: undefined })).toEqual({
      __typename: 'ValidationError',
      fieldErrors: [{ path: ['monthlyTokenLimit'], message: 'Give the limit, or null to remove it' }],
    });
    expect(await budget()).toEqual({ monthlyTokenLimit: 5000 });
    expect(await set({ monthlyTokenLimit: null })).toEqual({ __typename: 'Project', budget: { monthlyTokenLimit: null } });
    expect(await budget()).toEqual({ monthlyTokenLimit: null });
  });
});
