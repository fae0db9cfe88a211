import { describe, expect, it } from 'vitest';
import { ProjectDocument, SetProjectBudgetDocument, type StartGenerationInput } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, document, expectTypename, signUp, type TestUser } from './support/fixtures.js';
import { useStarted } from './support/lifecycle.js';
import { useTestServer } from './support/server.js';

// A start refused for the budget says what was spent and what is only held by runs still
// going: a queued generation's reservation is no usage, and "used up" when nothing was
// spent would send the owner looking for spending that never happened.

type Started =
  | { __typename: 'Generation'; id: string }
  | { __typename: 'BudgetExceededError'; message: string; limit: number; used: number; reserved: number }
  | { __typename: string; message: string };

const StartDocument = document<{ startGeneration: Started }, { input: StartGenerationInput }>(`
  mutation Start($input: StartGenerationInput!) {
    startGeneration(input: $input) {
      __typename
      ... on Generation { id }
      ... on BudgetExceededError { message limit used reserved }
      ... on Error { message }
    }
  }
`);

describe(`a start refused for the budget (${databaseKind})`, () => {
  // No worker: a started generation stays QUEUED, holding its reservation.
  const server = useTestServer({ ROLE: 'api', BUDGET_RESERVATION_TOKENS: '20000' });
  // Nothing to stop: the user goes with the server.
  const owner = useStarted<TestUser>(() => signUp(server), async () => {});

  it('tells tokens spent from tokens held by a generation still queued', async () => {
    const project = await createProject(owner.client);
    await owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: 1500 } });
    const start = async (prompt: string) => (await owner.client.expectNoErrors(StartDocument, { input: { projectId: project.id, prompt } })).startGeneration;

    // The first start holds what is left of the month: all of it.
    expectTypename(await start('A notes app'), 'Generation');
    const refused = expectTypename(await start('A timer app'), 'BudgetExceededError');

    expect(refused).toMatchObject({ limit: 1500, used: 0, reserved: 1500 });
    expect(refused.message).not.toMatch(/used up/);
    expect(refused.message).toContain('0 spent this month and 1500 held by generations still queued or running');
  });
  it('refuses a start when what is left of the month cannot cover even its prompt, rather than accepting a run that would stop at once', async () => {
    const project = await createProject(owner.client);
    // Far less than the target's system prompt alone: a run could not even ask the model.
    await owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: 100 } });
    const refused = expectTypename(
      (await owner.client.expectNoErrors(StartDocument, { input: { projectId: project.id, prompt: 'A notes app' } })).startGeneration,
      'BudgetExceededError',
    );
    expect(refused).toMatchObject({ limit: 100, used: 0, reserved: 0 });
    expect(refused.message).toMatch(/has 100 left this month \(0 spent\), fewer than a generation's prompt takes here \(about \d+\)/);
    // Nothing was queued.
    const { project: after } = await owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(after?.generations.edges).toHaveLength(0);
  });
});
