import { describe, expect, it } from 'vitest';
import { AddProjectMemberDocument, ArchiveProjectDocument, RemoveProjectMemberDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, expectTypename, ProjectByIdDocument, signUp, type TestUser } from './support/fixtures.js';
import { useTestServer } from './support/server.js';

const server = useTestServer();

async function membersAs(user: TestUser, projectId: string) {
  const { data } = await user.client.request(ProjectByIdDocument, { id: projectId });
  return data?.project?.members.map((member) => [member.user.email, member.role]) ?? null;
}

describe(`members of an archived project (${databaseKind})`, () => {
  it('takes no new member and no role change (as an edit, a budget or a new key), but an owner can still remove one', async () => {
    const [owner, editor, newcomer] = await Promise.all([signUp(server), signUp(server), signUp(server)]);
    const project = await createProject(owner.client);
    const added = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: editor.email, role: 'EDITOR' } });
    const editorId = expectTypename(added.addProjectMember, 'ProjectMember').user.id;
    expectTypename((await owner.client.expectNoErrors(ArchiveProjectDocument, { id: project.id })).archiveProject, 'Project');
    const before = await membersAs(owner, project.id);

    const attempts = [
      { email: newcomer.email, role: 'VIEWER' as const },
      { email: editor.email, role: 'OWNER' as const },
      // The same answer for an email with no account: an archived project tells nothing about it.
      { email: `nobody-${crypto.randomUUID()}@example.com`, role: 'VIEWER' as const },
    ];
    for (const attempt of attempts) {
      const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, ...attempt } });
      expect(addProjectMember, attempt.email).toEqual({ __typename: 'InvalidStateError', message: 'An archived project cannot be changed.' });
    }
    expect(await membersAs(owner, project.id)).toEqual(before);
    expect(await membersAs(newcomer, project.id)).toBeNull();

    // Archiving is final, so removal stays possible: a former teammate must still lose access.
    const { removeProjectMember } = await owner.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: project.id, userId: editorId } });
    expect(removeProjectMember).toEqual({ __typename: 'Project', id: project.id });
    expect(await membersAs(editor, project.id)).toBeNull();
    expect(await membersAs(owner, project.id)).toEqual([[owner.email, 'OWNER']]);
  });
});
