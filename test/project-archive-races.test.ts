import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  AddProjectMemberDocument,
  ArchiveProjectDocument,
  RemoveProjectMemberDocument,
  SetProjectBudgetDocument,
  SetProjectSecretDocument,
  UpdateProjectDocument,
} from './gql/graphql.js';
import { testDatabaseUrl } from './support/db.js';
import { createProject, expectTypename, signUp, type TestUser } from './support/fixtures.js';
import { rawId } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { useTestServer } from './support/server.js';

// Project changes racing an archive, a member's removal or a role change, on PostgreSQL
// (PGlite runs one transaction at a time, so nothing there can interleave). A second
// connection forces the interleaving: it holds the lock the use-case takes (an archive's, a
// start's, or the members'), with its own change made but not committed, until the request
// is seen waiting for it.

describe.skipIf(!testDatabaseUrl)("project changes racing an archive, a member's removal or a role change (postgres only: PGlite runs one transaction at a time)", () => {
  const logs = new LogCapture();
  const server = useTestServer({ LOG_LEVEL: 'error', KILN_ENCRYPTION_KEY: randomBytes(32).toString('base64') }, { logTo: logs });
  let admin: postgres.Sql;
  beforeAll(() => {
    // Two connections: one holds a transaction open, the other watches who waits for it.
    admin = postgres(server.database.url!, { max: 2, onnotice: () => {} });
  });
  afterAll(() => admin?.end());

  /** Runs `work` in a transaction of the second connection and keeps it open (its locks held) until `commit()`. */
  async function holdOpen(work: (tx: postgres.TransactionSql) => Promise<unknown>) {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held!: () => void;
    const holding = new Promise<void>((resolve) => (held = resolve));
    const done = admin.begin(async (tx) => {
      await work(tx);
      held();
      await released;
    });
    await Promise.race([holding, done]);
    return {
      commit: async () => {
        release();
        await done;
      },
    };
  }

  /** An archive under way: its lock taken and archivedAt set, not yet committed. */
  const archiveUnderWay = (projectId: string) =>
    holdOpen(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended(${`kiln.project-archive:${projectId}`}, 0))`;
      await tx`update projects set archived_at = now() where id = ${projectId}`;
    });

  /** Until `waiting` backends of this database wait for a lock, or `pending` has settled (then it did not wait). */
  async function untilWaitingOrDone(pending: Promise<unknown>, waiting = 1) {
    let settled = false;
    void pending.then(
      () => (settled = true),
      () => (settled = true),
    );
    await vi.waitFor(
      async () => {
        if (settled) return;
        const [row] = await admin<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
        expect(row!.n).toBe(waiting);
      },
      { timeout: 15_000, interval: 10 },
    );
  }

  async function storedProject(projectId: string) {
    const [row] = await admin<{ name: string; archived_at: Date | null; monthly_token_limit: number | null }[]>`
      select name, archived_at, monthly_token_limit from projects where id = ${projectId}`;
    return row!;
  }

  async function ownerWithProject(): Promise<{ owner: TestUser; id: string; projectId: string; name: string }> {
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    return { owner, id: project.id, projectId: rawId(project.id), name: project.name };
  }

  it('an edit made while an archive is under way waits for it, then is refused: the stored name stays', async () => {
    const { owner, id, projectId, name } = await ownerWithProject();
    const archive = await archiveUnderWay(projectId);
    const edit = owner.client.expectNoErrors(UpdateProjectDocument, { input: { id, name: 'renamed after archive' } });
    await untilWaitingOrDone(edit);
    await archive.commit();

    expect(expectTypename((await edit).updateProject, 'InvalidStateError').message).toBe('An archived project cannot be changed.');
    expect(await storedProject(projectId)).toMatchObject({ name, archived_at: expect.any(Date) });
  });

  it('a budget set while an archive is under way waits for it, then is refused: the project keeps no limit', async () => {
    const { owner, id, projectId } = await ownerWithProject();
    const archive = await archiveUnderWay(projectId);
    const edit = owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: id, monthlyTokenLimit: 5_000 } });
    await untilWaitingOrDone(edit);
    await archive.commit();

    expect(expectTypename((await edit).setProjectBudget, 'InvalidStateError').message).toBe('An archived project cannot be changed.');
    expect(await storedProject(projectId)).toMatchObject({ monthly_token_limit: null, archived_at: expect.any(Date) });
  });

  it('a key stored while an archive is under way waits for it, then is refused: an archived project takes no new key', async () => {
    const { owner, id, projectId } = await ownerWithProject();
    const archive = await archiveUnderWay(projectId);
    const edit = owner.client.expectNoErrors(SetProjectSecretDocument, { input: { projectId: id, name: 'GEMINI_API_KEY', value: 'AIza-stored-after-archive' } });
    await untilWaitingOrDone(edit);
    await archive.commit();

    expect(expectTypename((await edit).setProjectSecret, 'InvalidStateError').message).toBe('An archived project cannot be changed.');
    expect(await admin`select name from project_secrets where project_id = ${projectId}`).toHaveLength(0);
  });

  it('a member added while an archive is under way waits for it, then is refused: no one joins', async () => {
    const { owner, id, projectId } = await ownerWithProject();
    const newcomer = await signUp(server);
    const archive = await archiveUnderWay(projectId);
    const addition = owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: id, email: newcomer.email, role: 'EDITOR' } });
    await untilWaitingOrDone(addition);
    await archive.commit();

    expect(expectTypename((await addition).addProjectMember, 'InvalidStateError').message).toBe('An archived project cannot be changed.');
    const members = await admin<{ email: string }[]>`select u.email from project_members m join users u on u.id = m.user_id where m.project_id = ${projectId}`;
    expect(members.map((member) => member.email)).toEqual([owner.email]);
  });

  it('two archives at once both answer the archivedAt that is stored: the second keeps the first one\'s', async () => {
    const { owner, id, projectId } = await ownerWithProject();
    // Both archives come while a third holds the lock (archiving nothing), so they queue behind it together.
    const third = await holdOpen((tx) => tx`select pg_advisory_xact_lock(hashtextextended(${`kiln.project-archive:${projectId}`}, 0))`);
    const archives = Promise.all([1, 2].map(() => owner.client.expectNoErrors(ArchiveProjectDocument, { id })));
    await untilWaitingOrDone(archives, 2);
    await third.commit();

    const [first, second] = (await archives).map((result) => expectTypename(result.archiveProject, 'Project'));
    const { archived_at: stored } = await storedProject(projectId);
    expect(stored).toBeInstanceOf(Date);
    expect(new Date(first!.archivedAt as string).getTime()).toBe(stored!.getTime());
    expect(new Date(second!.archivedAt as string).getTime()).toBe(stored!.getTime());
  });

  it('a member removed while a start of theirs is under way waits for it, then stops what it queued', async () => {
    const { owner, id, projectId } = await ownerWithProject();
    const member = await signUp(server);
    expectTypename((await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: id, email: member.email, role: 'EDITOR' } })).addProjectMember, 'ProjectMember');
    const memberId = rawId(member.id);
    // The member's start, as startGeneration makes it: the start's shared lock, its generation queued, not yet committed.
    const start = await holdOpen(async (tx) => {
      await tx`select pg_advisory_xact_lock_shared(hashtextextended(${`kiln.project-archive:${projectId}`}, 0))`;
      await tx`insert into generations (project_id, created_by, session_id, prompt, provider, model)
        values (${projectId}, ${memberId}, gen_random_uuid(), 'started as they were removed', 'offline', 'offline')`;
    });
    const removal = owner.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: id, userId: member.id } });
    await untilWaitingOrDone(removal);
    await start.commit();

    expectTypename((await removal).removeProjectMember, 'Project');
    const work = await admin<{ status: string }[]>`select status from generations where project_id = ${projectId}`;
    expect(work).toEqual([{ status: 'CANCELLED' }]);
  });

  it('an owner demoted while adding a member gets a ForbiddenError (not "Unexpected error."), and no member is added', async () => {
    const [creator, second, newcomer] = await Promise.all([signUp(server), signUp(server), signUp(server)]);
    const project = await createProject(creator.client);
    const projectId = rawId(project.id);
    expectTypename((await creator.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: second.email, role: 'OWNER' } })).addProjectMember, 'ProjectMember');
    const [secondUser] = await admin<{ id: string }[]>`select id from users where email = ${second.email}`;
    const secondId = secondUser!.id;

    // The creator demotes the second owner while holding the members' lock, which the addition
    // takes after it has checked the role.
    const demotion = await holdOpen(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended(${`kiln.project-members:${projectId}`}, 0))`;
      await tx`update project_members set role = 'editor' where project_id = ${projectId} and user_id = ${secondId}`;
    });
    const logged = logs.lines.length;
    const addition = second.client.request(AddProjectMemberDocument, { input: { projectId: project.id, email: newcomer.email, role: 'VIEWER' } });
    await untilWaitingOrDone(addition);
    await demotion.commit();

    const response = await addition;
    expect(response.errors).toBeUndefined();
    expect(response.data?.addProjectMember).toMatchObject({ __typename: 'ForbiddenError', message: expect.any(String) });
    const members = await admin<{ email: string; role: string }[]>`
      select u.email, m.role from project_members m join users u on u.id = m.user_id where m.project_id = ${projectId}`;
    expect(Object.fromEntries(members.map((member) => [member.email, member.role]))).toEqual({ [creator.email]: 'owner', [second.email]: 'editor' });
    // An expected refusal: no error in the log.
    expect(logs.lines.slice(logged)).toEqual([]);
  });
});
