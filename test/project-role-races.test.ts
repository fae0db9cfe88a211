import { randomBytes } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Tx } from '../src/db/client.js';
import { rowsOf } from '../src/db/client.js';
import { projectStore } from '../src/projects/store.js';
import {
  AddProjectMemberDocument,
  ArchiveProjectDocument,
  type ProjectRole,
  RemoveProjectMemberDocument,
  SetProjectBudgetDocument,
  SetProjectSecretDocument,
  UpdateProjectDocument,
} from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, expectTypename, signUp, type TestUser } from './support/fixtures.js';
import { useTestServer } from './support/server.js';

// A use-case reads the viewer's role, then writes; on PostgreSQL (READ COMMITTED) a role
// change committed in between is seen by the write, whose row policies then match no row,
// which PostgreSQL does not report as an error. These tests make that change at that moment,
// in the use-case's own transaction, right after its read of the project.

const server = useTestServer({ KILN_ENCRYPTION_KEY: randomBytes(32).toString('base64') });

afterEach(() => {
  vi.restoreAllMocks();
});

const rawId = (globalId: string) => decodeGlobalID(globalId).id;

/** The next read of the project demotes `member` to `role` once it has read, as a commit just after it would. */
function demoteAfterNextRead(projectId: string, member: TestUser, role: 'editor' | 'viewer') {
  const find = projectStore.find.bind(projectStore);
  vi.spyOn(projectStore, 'find').mockImplementationOnce(async (tx: Tx, id: string) => {
    const project = await find(tx, id);
    await tx.execute(sql`reset role`);
    await tx.execute(
      sql`update project_members set role = ${role} where project_id = ${rawId(projectId)} and user_id = (select id from users where email = ${member.email})`,
    );
    await tx.execute(sql`select set_config('role', 'authenticated', true)`);
    return project;
  });
}

async function projectWithMember(role: ProjectRole) {
  const [owner, member] = await Promise.all([signUp(server), signUp(server)]);
  const project = await createProject(owner.client, { name: 'Before', target: 'FLUTTER' });
  const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: member.email, role } });
  expectTypename(addProjectMember, 'ProjectMember');
  return { owner, member, project };
}

async function projectRow(projectId: string) {
  const [row] = rowsOf<{ name: string; archived_at: Date | null; monthly_token_limit: number | null }>(
    await server.database.db.execute(sql`select name, archived_at, monthly_token_limit from projects where id = ${rawId(projectId)}`),
  );
  return row!;
}

describe(`a role taken away between a change's read and its write (${databaseKind})`, () => {
  it('refuses an update, an archive and a budget with a ForbiddenError, and changes nothing', async () => {
    const { member: editor, project } = await projectWithMember('EDITOR');
    demoteAfterNextRead(project.id, editor, 'viewer');
    const { updateProject } = await editor.client.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'After' } });
    expect(updateProject).toMatchObject({ __typename: 'ForbiddenError', message: 'Only a project owner or editor can do that.' });

    const { member: coOwner, project: shared } = await projectWithMember('OWNER');
    demoteAfterNextRead(shared.id, coOwner, 'editor');
    const { setProjectBudget } = await coOwner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: shared.id, monthlyTokenLimit: 7 } });
    expect(setProjectBudget).toMatchObject({ __typename: 'ForbiddenError' });
    demoteAfterNextRead(shared.id, coOwner, 'editor');
    const { archiveProject } = await coOwner.client.expectNoErrors(ArchiveProjectDocument, { id: shared.id });
    expect(archiveProject).toMatchObject({ __typename: 'ForbiddenError' });

    expect(await projectRow(project.id)).toMatchObject({ name: 'Before' });
    expect(await projectRow(shared.id)).toMatchObject({ archived_at: null, monthly_token_limit: null });
  });

  it('refuses deleting a key and removing a member instead of answering as if done or as if absent', async () => {
    const { owner, member: coOwner, project } = await projectWithMember('OWNER');
    const input = { projectId: project.id, name: 'GEMINI_API_KEY' as const };
    expectTypename((await owner.client.expectNoErrors(SetProjectSecretDocument, { input: { ...input, value: 'AIza-kept-key' } })).setProjectSecret, 'Project');

    demoteAfterNextRead(project.id, coOwner, 'editor');
    const { setProjectSecret } = await coOwner.client.expectNoErrors(SetProjectSecretDocument, { input: { ...input, value: null } });
    expect(setProjectSecret).toMatchObject({ __typename: 'ForbiddenError', message: 'Only a project owner can do that.' });
    const { setProjectSecret: seen } = await owner.client.expectNoErrors(SetProjectSecretDocument, { input: { ...input, value: 'AIza-kept-key' } });
    expect(expectTypename(seen, 'Project').secrets.map((secret) => secret.name)).toEqual(['GEMINI_API_KEY']);

    // Made an owner again, then demoted while removing a third member.
    const viewer = await signUp(server);
    await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: coOwner.email, role: 'OWNER' } });
    const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: viewer.email, role: 'VIEWER' } });
    const viewerId = expectTypename(addProjectMember, 'ProjectMember').user.id;
    demoteAfterNextRead(project.id, coOwner, 'editor');
    const { removeProjectMember } = await coOwner.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: project.id, userId: viewerId } });
    expect(removeProjectMember).toMatchObject({ __typename: 'ForbiddenError', message: 'Only a project owner can do that.' });
    const [{ count }] = rowsOf<{ count: number }>(
      await server.database.db.execute(sql`select count(*)::int as count from project_members where project_id = ${rawId(project.id)} and user_id = ${rawId(viewerId)}`),
    ) as [{ count: number }];
    expect(count).toBe(1);
  });
});
