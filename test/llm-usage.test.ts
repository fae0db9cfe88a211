import { describe, expect, it } from 'vitest';
import { CancelGenerationDocument, ProjectDocument, SetProjectBudgetDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, expectTypename } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { firstChunks, startAccepted, waitForEnd } from './support/generation-helpers.js';

// What Gemini counted is what a run spent, however the run ends: a run stopped mid-answer
// never gets the stream's last usage, and the tokens Gemini spent thinking are in the count
// only, not in any estimate of the text.

/** Gemini has read the prompt and thought at length, and goes on writing (it stalls here). */
const COUNTED = { promptTokens: 30_000, outputTokens: 20_000 };

describe(`the usage Gemini counted, for a run stopped mid-answer (${databaseKind})`, () => {
  const suite = useGeminiServer();

  it('is recorded when the run is cancelled', async () => {
    suite.gemini.script({ kind: 'stall', chunks: ['Here is your app.\n'], usage: COUNTED });
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'An app that takes a lot of thought' });
    await firstChunks(suite.server.url, suite.owner.accessToken, started.id, 1);
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation.status).toBe('CANCELLED');
    expect(generation.usage).toEqual({ inputTokens: COUNTED.promptTokens, outputTokens: COUNTED.outputTokens });
    const { project: after } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(after!.usage).toMatchObject(generation.usage);
  });

  it('is recorded when the run stops at its budget', async () => {
    // Its estimate alone passes the budget: 10,000 tokens of text.
    suite.gemini.script({ kind: 'stall', chunks: ['x'.repeat(40_000)], usage: COUNTED });
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    expectTypename(
      (await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: 5_000 } })).setProjectBudget,
      'Project',
    );
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'An app that takes a lot of thought' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    expect(generation.usage).toEqual({ inputTokens: COUNTED.promptTokens, outputTokens: COUNTED.outputTokens });
  });

  it("stops the run once Gemini's count passes the limit, though the text it streamed is short", async () => {
    // Twenty sentences, each with 10,000 more output tokens in Gemini's count: a model thinking at length.
    const chunks = Array.from({ length: 20 }, (_, i) => `Part ${i} of the plan. `);
    suite.gemini.script({ kind: 'stream', chunks, usage: { promptTokens: 1_000, outputTokens: 200_000 } });
    const limit = 30_000;
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    expectTypename(
      (await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: limit } })).setProjectBudget,
      'Project',
    );
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'An app that takes a lot of thought' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' }, files: [], buildSteps: [] });
    expect(generation.output.length).toBeLessThan(chunks.join('').length);
    expect(chunks.join('').startsWith(generation.output)).toBe(true);
    // Past the limit by no more than the event that took it over: Gemini's count is what is charged.
    const { project: after } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    const used = after!.usage.inputTokens + after!.usage.outputTokens;
    expect(used).toBeGreaterThan(limit);
    expect(used).toBeLessThanOrEqual(limit + 10_000);
  });
});
