import { decodeGlobalID } from '@pothos/plugin-relay';
import { eq } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { generations } from '../src/db/schema.js';
import {
  AddProjectMemberDocument,
  CancelGenerationDocument,
  ConversationDocument,
  GenerationDocument,
  ProjectDocument,
  RetryGenerationDocument,
  SetProjectBudgetDocument,
} from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, expectTypename, signUp } from './support/fixtures.js';
import { getGeneration, startAccepted, startGeneration, waitForEnd } from './support/generation-helpers.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { useGenerationServer } from './support/suite-server.js';

// Who may start, cancel and retry generations, and the limits on starting them.

describe(`generations with a worker (${databaseKind})`, () => {
  const suite = useGenerationServer();

  it('lets a viewer read but not start or cancel, and hides the project from a stranger', async () => {
    const [viewer, editor, stranger] = [await signUp(suite.server), await signUp(suite.server), await signUp(suite.server)];
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    for (const [user, role] of [[viewer, 'VIEWER'], [editor, 'EDITOR']] as const) {
      const { addProjectMember } = await suite.owner.client.expectNoErrors(AddProjectMemberDocument, {
        input: { projectId: project.id, email: user.email, role },
      });
      expectTypename(addProjectMember, 'ProjectMember');
    }

    expectTypename(await startGeneration(viewer.client, { projectId: project.id, prompt: 'A clock' }), 'ForbiddenError');
    const hidden = expectTypename(await startGeneration(stranger.client, { projectId: project.id, prompt: 'A clock' }), 'NotFoundError');
    expect(hidden.message).not.toMatch(/forbidden|member|permission/i);

    // An editor may; then the viewer can follow it but not stop it, and a stranger sees nothing.
    const started = await startAccepted(editor.client, { projectId: project.id, prompt: 'A clock' });
    const { cancelGeneration: byViewer } = await viewer.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    expectTypename(byViewer, 'ForbiddenError');
    const { cancelGeneration: byStranger } = await stranger.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    expectTypename(byStranger, 'NotFoundError');
    const { retryGeneration: retryByStranger } = await stranger.client.expectNoErrors(RetryGenerationDocument, { id: started.id });
    expectTypename(retryByStranger, 'NotFoundError');
    expect((await stranger.client.expectNoErrors(GenerationDocument, { id: started.id })).generation).toBeNull();

    const finished = await waitForEnd(suite.server, viewer.client, viewer.accessToken, started.id);
    expect(finished.status).toBe('SUCCEEDED');
    expectTypename((await viewer.client.expectNoErrors(RetryGenerationDocument, { id: started.id })).retryGeneration, 'ForbiddenError');
  });

  it('retries a finished generation as a new one with retryOf, attempt 2, the same prompt and session', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const prompt = 'A tip calculator with a slider';
    const original = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, original.id)).status).toBe('SUCCEEDED');

    const { retryGeneration } = await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: original.id });
    const retry = expectTypename(retryGeneration, 'Generation');
    expect(retry.id).not.toBe(original.id);
    expect(retry).toMatchObject({ status: 'QUEUED', attempt: 2, prompt, sessionId: original.sessionId });

    const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, retry.id);
    expect(done).toMatchObject({ status: 'SUCCEEDED', retryOf: { id: original.id }, attempt: 2 });
    expect((await getGeneration(suite.owner.client, original.id)).status).toBe('SUCCEEDED');

    // Both are listed on the project, newest first.
    const { project: listed } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(listed?.generations.edges.map((e) => e.node.id)).toEqual([retry.id, original.id]);
    // The retry is a turn of the conversation like any other.
    const { project: talk } = await suite.owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: original.sessionId });
    expect(talk?.conversation.map((m) => [m.role, m.generation?.id])).toEqual([
      ['USER', original.id],
      ['MODEL', original.id],
      ['USER', retry.id],
      ['MODEL', retry.id],
    ]);
  });

  it('refuses to start once the monthly budget is used up, saying how much, and starts again when it is raised', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const first = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A quiz about capitals' });
    const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, first.id);
    const used = done.usage.inputTokens + done.usage.outputTokens;
    expect(used).toBeGreaterThan(0);

    const { setProjectBudget } = await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, {
      input: { projectId: project.id, monthlyTokenLimit: 10 },
    });
    expect(expectTypename(setProjectBudget, 'Project')).toMatchObject({
      budget: { monthlyTokenLimit: 10 },
      usage: { inputTokens: done.usage.inputTokens, outputTokens: done.usage.outputTokens, generationCount: 1 },
    });

    const refused = expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'One more' }), 'BudgetExceededError');
    expect(refused).toMatchObject({ limit: 10, used });
    expect(refused.message).toContain(String(used));
    // A retry is a start too.
    expectTypename((await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: first.id })).retryGeneration, 'BudgetExceededError');
    // Nothing was queued by the refusals.
    const { project: after } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(after?.generations.edges).toHaveLength(1);

    await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: used + 1_000_000 } });
    await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'One more' });
  });
});

describe(`generations without a worker: ROLE=api (${databaseKind})`, () => {
  const suite = useGenerationServer({ ROLE: 'api', MAX_ACTIVE_GENERATIONS_PER_USER: '1' });

  it('ends a QUEUED generation at once when cancelled; it never runs, and cannot be cancelled twice', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A flashcard app' });
    expect(started.status).toBe('QUEUED');

    const { cancelGeneration } = await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    expect(expectTypename(cancelGeneration, 'Generation')).toMatchObject({ status: 'CANCELLED', phase: 'DONE', startedAt: null });
    expect(cancelGeneration).toHaveProperty('finishedAt', expect.any(String));

    const generation = await getGeneration(suite.owner.client, started.id);
    expect(generation).toMatchObject({ status: 'CANCELLED', output: '', files: [], buildSteps: [], error: null });
    const { cancelGeneration: again } = await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    expect(expectTypename(again, 'InvalidStateError').message).toMatch(/already ended/);
  });

  it("refuses a sessionId that names no session of the project (a slip, another project's), and joins one whose runs all failed", async () => {
    const [project, other] = [await createProject(suite.owner.client, { target: 'FLUTTER' }), await createProject(suite.owner.client, { target: 'FLUTTER' })];
    const elsewhere = await startAccepted(suite.owner.client, { projectId: other.id, prompt: 'A timer' });
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: elsewhere.id });

    for (const sessionId of [crypto.randomUUID(), elsewhere.sessionId]) {
      const refused = expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'Continue', sessionId }), 'NotFoundError');
      expect(refused.message).toBe('Session not found in this project.');
    }
    const { project: untouched } = await suite.owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(untouched!.generations.edges).toEqual([]);

    // A session is there once it has a generation, whatever became of it.
    const followUp = await startAccepted(suite.owner.client, { projectId: other.id, prompt: 'A timer, again', sessionId: elsewhere.sessionId });
    expect(followUp.sessionId).toBe(elsewhere.sessionId);
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: followUp.id });
  });

  it('limits how many generations a user has queued or running, per user', async () => {
    const refusedBefore = await refusalCounts(suite.server.url);
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const first = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A metronome' });
    expect(first.status).toBe('QUEUED');

    const limited = expectTypename(await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'A tuner' }), 'RateLimitedError');
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
    expect(limited.message).toMatch(/1 generations queued or running/);
    expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ max_active_generations_per_user: 1 }));
    // Only a finished generation can be retried.
    const { retryGeneration } = await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: first.id });
    expectTypename(retryGeneration, 'InvalidStateError');

    // Another user is not held back by this one.
    const other = await signUp(suite.server);
    const theirs = await createProject(other.client, { target: 'FLUTTER' });
    await startAccepted(other.client, { projectId: theirs.id, prompt: 'A tuner' });

    // Once the first one ends, the user may start again.
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: first.id });
    await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A tuner' });
  });

  it('refuses, with the reason, to retry a generation that is its prompt\'s 100th attempt, and queues nothing', async () => {
    // A user of its own: the tests before leave the owner's one active generation taken.
    const user = await signUp(suite.server);
    const project = await createProject(user.client, { target: 'FLUTTER' });
    const started = await startAccepted(user.client, { projectId: project.id, prompt: 'A dice roller' });
    await user.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    // As 99 retries of it would have left it (each queued one cancelled by the next user's turn).
    await suite.server.database.db.update(generations).set({ attempt: 99 }).where(eq(generations.id, decodeGlobalID(started.id).id));
    const last = expectTypename((await user.client.expectNoErrors(RetryGenerationDocument, { id: started.id })).retryGeneration, 'Generation');
    expect(last.attempt).toBe(100);
    await user.client.expectNoErrors(CancelGenerationDocument, { id: last.id });

    const refused = expectTypename((await user.client.expectNoErrors(RetryGenerationDocument, { id: last.id })).retryGeneration, 'InvalidStateError');
    expect(refused.message).toMatch(/tried 100 times.*start a new generation/);
    const { project: listed } = await user.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(listed?.generations.edges.map((edge) => edge.node.id)).toEqual([last.id, started.id]);
  });

  it('holds the limit when many starts arrive at the same moment', async () => {
    const user = await signUp(suite.server);
    const project = await createProject(user.client, { target: 'FLUTTER' });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => startGeneration(user.client, { projectId: project.id, prompt: `Parallel ${i}` })),
    );
    const kinds = results.map((r) => r.__typename);
    expect(kinds.filter((k) => k === 'Generation')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'RateLimitedError')).toHaveLength(19);
    const { project: listed } = await user.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(listed?.generations.edges).toHaveLength(1);
  });
});
