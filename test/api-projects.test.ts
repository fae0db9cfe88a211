import { Writable } from 'node:stream';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { eq, sql } from 'drizzle-orm';
import { print } from 'graphql';
import { describe, expect, it } from 'vitest';
import { projectMembers as projectMembersTable, projects as projectsTable, users as usersTable } from '../src/db/schema.js';
import { MAX_PROJECT_MEMBERS } from '../src/projects/projects.js';
import {
  AddProjectMemberDocument,
  ArchiveProjectDocument,
  CreateProjectDocument,
  type ProjectRole,
  ProjectsDocument,
  type ProjectsQuery,
  RemoveProjectMemberDocument,
  SetProjectBudgetDocument,
  UpdateProjectDocument,
  ViewerDocument,
} from './gql/graphql.js';
import {
  createProject,
  document,
  expectTypename,
  MutationFieldErrorsDocument,
  NodeDocument,
  onlyError,
  type ProjectDetails,
  ProjectByIdDocument,
  signUp,
  type TestUser,
  UpdateProjectWithFieldErrorsDocument,
} from './support/fixtures.js';
import { type GraphQLClient, type GraphQLResponse, useTestServer } from './support/server.js';

const server = useTestServer();

// ------------------------------------------------------------------ helpers

/** The project as this client sees it through project(id); null when it may not see it. */
async function projectAs(client: GraphQLClient, id: string): Promise<ProjectDetails | null> {
  return (await client.request(ProjectByIdDocument, { id })).data?.project ?? null;
}

/** Every project id in the client's `projects`, paging through to the end. */
async function allProjectIds(client: GraphQLClient): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  for (;;) {
    const { projects }: ProjectsQuery = await client.expectNoErrors(ProjectsDocument, { first: 100, after });
    ids.push(...projects.edges.map((e) => e.node.id));
    if (!projects.pageInfo.hasNextPage) return ids;
    after = projects.pageInfo.endCursor;
  }
}

async function addMember(owner: TestUser, projectId: string, member: TestUser, role: ProjectRole) {
  const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
    input: { projectId, email: member.email, role },
  });
  return addProjectMember;
}

/** A project of a new owner with a new editor and a new viewer. */
async function team() {
  const [owner, editor, viewer] = await Promise.all([signUp(server), signUp(server), signUp(server)]);
  const project = await createProject(owner.client, { name: 'Team project', description: 'Shared', target: 'FLUTTER' });
  expectTypename(await addMember(owner, project.id, editor, 'EDITOR'), 'ProjectMember');
  expectTypename(await addMember(owner, project.id, viewer, 'VIEWER'), 'ProjectMember');
  return { owner, editor, viewer, project };
}

/** The global id of the user with this email, as project members list it. */
function memberId(project: ProjectDetails, email: string): string {
  const member = project.members.find((m) => m.user.email === email);
  if (!member) throw new Error(`${email} is not a member`);
  return member.user.id;
}

/** A well-formed Project id that names no project. */
const unknownProjectId = () => encodeGlobalID('Project', crypto.randomUUID());

// ------------------------------------------------------------------ create, update, archive

describe('create, update and archive', () => {
  it('creates a project that its creator owns and finds by id and in the list', async () => {
    const owner = await signUp(server);

    const { createProject: created } = await owner.client.expectNoErrors(CreateProjectDocument, {
      input: { name: 'Todo app', description: 'A list of things to do', target: 'FLUTTER' },
    });

    const project = expectTypename(created, 'Project');
    expect(project).toMatchObject({
      name: 'Todo app',
      description: 'A list of things to do',
      target: 'FLUTTER',
      viewerRole: 'OWNER',
      archivedAt: null,
    });
    expect(Date.parse(project.createdAt)).not.toBeNaN();
    const { __typename: _typename, ...fields } = project;
    expect(await projectAs(owner.client, project.id)).toEqual({
      ...fields,
      members: [{ role: 'OWNER', user: { id: expect.any(String), email: owner.email } }],
    });
    expect(await allProjectIds(owner.client)).toEqual([project.id]);
  });

  it('creates a project without a description', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'Bare', target: 'WEB' });
    expect(project).toMatchObject({ name: 'Bare', description: null, target: 'WEB' });
  });

  it('updates name and description, keeps what is not given, and moves updatedAt', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'Before', description: 'Old words' });

    const { updateProject: renamed } = await owner.client.expectNoErrors(UpdateProjectDocument, {
      input: { id: project.id, name: 'After' },
    });
    expect(expectTypename(renamed, 'Project')).toMatchObject({ id: project.id, name: 'After', description: 'Old words' });

    const { updateProject: described } = await owner.client.expectNoErrors(UpdateProjectDocument, {
      input: { id: project.id, description: 'New words' },
    });
    const updated = expectTypename(described, 'Project');
    expect(updated).toMatchObject({ name: 'After', description: 'New words', createdAt: project.createdAt });
    expect(Date.parse(updated.updatedAt)).toBeGreaterThan(Date.parse(project.updatedAt));
    expect(await projectAs(owner.client, project.id)).toMatchObject({ name: 'After', description: 'New words' });
  });

  it('archives a project: archivedAt is set, it stays readable, and it can no longer be changed', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);

    const { archiveProject } = await owner.client.expectNoErrors(ArchiveProjectDocument, { id: project.id });
    const archived = expectTypename(archiveProject, 'Project');
    expect(archived.archivedAt).not.toBeNull();
    expect(await projectAs(owner.client, project.id)).toMatchObject({ archivedAt: archived.archivedAt, name: project.name });

    const { updateProject } = await owner.client.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'Too late' } });
    expectTypename(updateProject, 'InvalidStateError');
    expect(await projectAs(owner.client, project.id)).toMatchObject({ name: project.name });
    const { setProjectBudget } = await owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: 7 } });
    expect(expectTypename(setProjectBudget, 'InvalidStateError').message).toBe('An archived project cannot be changed.');
    const projectBudget = document<{ project: { updatedAt: string; budget: { monthlyTokenLimit: number | null } } }, { id: string }>(
      'query($id: ID!) { project(id: $id) { updatedAt budget { monthlyTokenLimit } } }',
    );
    const { project: kept } = await owner.client.expectNoErrors(projectBudget, { id: project.id });
    expect(kept).toEqual({ updatedAt: archived.updatedAt, budget: { monthlyTokenLimit: null } });

    // Archiving again changes nothing.
    const { archiveProject: again } = await owner.client.expectNoErrors(ArchiveProjectDocument, { id: project.id });
    expect(expectTypename(again, 'Project').archivedAt).toBe(archived.archivedAt);
  });
});

// ------------------------------------------------------------------ the list

describe('projects: a paginated list', () => {
  it('pages newest first with first/after, with totalCount and hasNextPage', async () => {
    const owner = await signUp(server);
    const created: string[] = [];
    for (let i = 0; i < 5; i++) created.push((await createProject(owner.client, { name: `P${i}` })).id);
    const newestFirst = [...created].reverse();

    const pages: string[][] = [];
    let after: string | null = null;
    for (;;) {
      const { projects }: ProjectsQuery = await owner.client.expectNoErrors(ProjectsDocument, { first: 2, after });
      expect(projects.totalCount).toBe(5);
      expect(projects.pageInfo.endCursor).toBe(projects.edges.at(-1)?.cursor ?? null);
      pages.push(projects.edges.map((e) => e.node.id));
      if (!projects.pageInfo.hasNextPage) break;
      after = projects.pageInfo.endCursor;
    }

    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(newestFirst);
    const { projects: everything } = await owner.client.expectNoErrors(ProjectsDocument, {});
    expect(everything.edges.map((e) => e.node.id)).toEqual(newestFirst);
    expect(everything.pageInfo.hasNextPage).toBe(false);
  });

  // Cursors carry created_at to the millisecond, which is exactly what the column stores.
  it('lists every project exactly once, page by page, when several were created in the same millisecond', async () => {
    const owner = await signUp(server);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await createProject(owner.client, { name: `Burst ${i}` })).id);
    // As concurrent creations do: one millisecond, different microseconds (arranged directly in
    // the database, in one transaction so that now() is the same for all).
    await server.database.db.transaction(async (tx) => {
      for (const [i, id] of ids.entries()) {
        await tx
          .update(projectsTable)
          .set({ createdAt: sql`date_trunc('milliseconds', now()) + ${`${(i + 1) * 100} microseconds`}::interval` })
          .where(eq(projectsTable.id, decodeGlobalID(id).id));
      }
    });

    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 10; page++) {
      const { projects: list }: ProjectsQuery = await owner.client.expectNoErrors(ProjectsDocument, { first: 1, after });
      seen.push(...list.edges.map((e) => e.node.id));
      if (!list.pageInfo.hasNextPage) break;
      after = list.pageInfo.endCursor;
    }

    // Equal timestamps order by id; what matters is that no project is skipped or repeated.
    expect(seen).toHaveLength(ids.length);
    expect([...seen].sort()).toEqual([...ids].sort());
  });

  it('gives an exact page hasNextPage false, and an empty list for a new user', async () => {
    const owner = await signUp(server);
    await createProject(owner.client);
    await createProject(owner.client);

    const { projects: exact } = await owner.client.expectNoErrors(ProjectsDocument, { first: 2 });
    expect(exact.edges).toHaveLength(2);
    expect(exact.pageInfo.hasNextPage).toBe(false);

    const newcomer = await signUp(server);
    const { projects: none } = await newcomer.client.expectNoErrors(ProjectsDocument, { first: 10 });
    expect(none).toEqual({ totalCount: 0, pageInfo: { hasNextPage: false, endCursor: null }, edges: [] });
  });

  it('accepts first: 100', async () => {
    const owner = await signUp(server);
    await createProject(owner.client);
    const { projects } = await owner.client.expectNoErrors(ProjectsDocument, { first: 100 });
    expect(projects.edges).toHaveLength(1);
  });

  it.each([101, 1000, -1])('refuses first: %i with an input error, not a masked one', async (first) => {
    const owner = await signUp(server);
    await createProject(owner.client);

    const response = await owner.client.request(ProjectsDocument, { first });

    expect(response.data ?? null).toBeNull();
    const error = onlyError(response);
    expect(error.path).toEqual(['projects']);
    expect(error.extensions?.code).toBe('BAD_USER_INPUT');
    expect(error.message).not.toBe('Unexpected error.');
  });

  it.each([
    ['garbage', 'not a cursor'],
    ['base64 of garbage', Buffer.from('hello|world').toString('base64url')],
    ['a Project global id', encodeGlobalID('Project', crypto.randomUUID())],
    ['dated in year 0, which PostgreSQL has no timestamp for', Buffer.from(`0000-01-01T00:00:00Z|${crypto.randomUUID()}`).toString('base64url')],
  ])('refuses a bad cursor (%s) with an input error', async (_what, after) => {
    const owner = await signUp(server);
    await createProject(owner.client);

    const response = await owner.client.request(ProjectsDocument, { first: 10, after });

    expect(response.data ?? null).toBeNull();
    const error = onlyError(response);
    expect(error.extensions?.code).toBe('BAD_USER_INPUT');
    expect(error.message).not.toBe('Unexpected error.');
  });

  it('answers an unauthenticated projects query with an UNAUTHENTICATED error', async () => {
    const response = await server.client().request(ProjectsDocument, {});

    expect(response.data ?? null).toBeNull();
    const error = onlyError(response);
    expect(error.path).toEqual(['projects']);
    expect(error.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('answers unauthenticated mutations with an AuthError', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    const anonymous = server.client();

    expectTypename((await anonymous.expectNoErrors(CreateProjectDocument, { input: { name: 'x', target: 'WEB' } })).createProject, 'AuthError');
    expectTypename((await anonymous.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'x' } })).updateProject, 'AuthError');
    expectTypename((await anonymous.expectNoErrors(ArchiveProjectDocument, { id: project.id })).archiveProject, 'AuthError');
    expect(await projectAs(owner.client, project.id)).toMatchObject({ name: project.name, archivedAt: null });
  });
});

// ------------------------------------------------------------------ ids and node

describe('project(id) and node(id)', () => {
  it('resolves a Project and a User by global id through node', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'Noded' });
    const ownerId = memberId((await projectAs(owner.client, project.id))!, owner.email);

    expect((await owner.client.expectNoErrors(NodeDocument, { id: project.id })).node).toEqual({
      __typename: 'Project',
      id: project.id,
      name: 'Noded',
    });
    expect((await owner.client.expectNoErrors(NodeDocument, { id: ownerId })).node).toEqual({
      __typename: 'User',
      id: ownerId,
      email: owner.email,
    });
  });

  it('finds a project through node by an upper-case uuid, as project(id) does', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'Shouted' });
    const upper = encodeGlobalID('Project', decodeGlobalID(project.id).id.toUpperCase());

    expect((await owner.client.expectNoErrors(ProjectByIdDocument, { id: upper })).project).toMatchObject({ id: project.id });
    expect((await owner.client.expectNoErrors(NodeDocument, { id: upper })).node).toEqual({ __typename: 'Project', id: project.id, name: 'Shouted' });
  });

  it('shows teammates as Users through node, and not other people', async () => {
    const { owner, editor, project } = await team();
    const stranger = await signUp(server);
    const editorId = memberId((await projectAs(owner.client, project.id))!, editor.email);

    expect((await owner.client.expectNoErrors(NodeDocument, { id: editorId })).node).toMatchObject({ email: editor.email });
    expect((await stranger.client.request(NodeDocument, { id: editorId })).data?.node ?? null).toBeNull();
  });

  it('gives project(id) null for a garbage id and for a User id', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    const userId = memberId((await projectAs(owner.client, project.id))!, owner.email);

    for (const id of ['garbage', '', userId]) {
      expect(await owner.client.expectNoErrors(ProjectByIdDocument, { id })).toEqual({ project: null });
    }
  });

  // The contract: a project the viewer may not see is simply null, never an error.
  it('gives project(id) and node(id) null, without an error, for a project the viewer may not see or that does not exist', async () => {
    const owner = await signUp(server);
    const stranger = await signUp(server);
    const project = await createProject(owner.client);

    for (const id of [project.id, unknownProjectId()]) {
      expect(await stranger.client.request(ProjectByIdDocument, { id })).toEqual({ data: { project: null } });
      expect(await stranger.client.request(NodeDocument, { id })).toEqual({ data: { node: null } });
    }
  });

  // DESIGN: ids are Relay global ids, the same wherever a user appears.
  it('names the signed-in user with the same global id in viewer, members and node', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    const fromMembers = memberId((await projectAs(owner.client, project.id))!, owner.email);

    expect(owner.id).toBe(fromMembers);
    expect((await owner.client.request(NodeDocument, { id: owner.id })).data?.node).toMatchObject({ __typename: 'User' });
  });
});

// ------------------------------------------------------------------ membership

describe('members and roles', () => {
  it('adds a member by email (any case), shows their role, and changes it', async () => {
    const [owner, member] = await Promise.all([signUp(server), signUp(server)]);
    const project = await createProject(owner.client);

    const { addProjectMember: added } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: member.email.toUpperCase(), role: 'EDITOR' },
    });
    expect(added).toMatchObject({ __typename: 'ProjectMember', role: 'EDITOR', user: { email: member.email } });
    expect(await projectAs(member.client, project.id)).toMatchObject({ id: project.id, viewerRole: 'EDITOR' });
    expect(await allProjectIds(member.client)).toEqual([project.id]);

    expect(await addMember(owner, project.id, member, 'VIEWER')).toMatchObject({ role: 'VIEWER', user: { email: member.email } });
    expect((await projectAs(member.client, project.id))?.viewerRole).toBe('VIEWER');
    const members = (await projectAs(owner.client, project.id))!.members;
    expect(members.map((m) => [m.user.email, m.role]).sort()).toEqual(
      [
        [owner.email, 'OWNER'],
        [member.email, 'VIEWER'],
      ].sort(),
    );
    // Every member sees the same member list.
    expect((await projectAs(member.client, project.id))!.members).toEqual(members);
  });

  it('holds a project to MAX_PROJECT_MEMBERS members: one more is an InvalidStateError, a role change is not', async () => {
    const [owner, last, oneTooMany] = await Promise.all([signUp(server), signUp(server), signUp(server)]);
    const project = await createProject(owner.client);
    // All but one of the places filled directly in the database, as many sign-ups would.
    const filler = Array.from({ length: MAX_PROJECT_MEMBERS - 2 }, () => ({ id: crypto.randomUUID(), email: `filler-${crypto.randomUUID()}@example.com` }));
    await server.database.db.transaction(async (tx) => {
      await tx.insert(usersTable).values(filler);
      await tx.insert(projectMembersTable).values(filler.map(({ id }) => ({ projectId: decodeGlobalID(project.id).id, userId: id, role: 'viewer' as const })));
    });

    expect(await addMember(owner, project.id, last, 'VIEWER')).toMatchObject({ __typename: 'ProjectMember', role: 'VIEWER' });
    const refused = await addMember(owner, project.id, oneTooMany, 'VIEWER');
    expect(expectTypename(refused, 'InvalidStateError').message).toBe(`A project has at most ${MAX_PROJECT_MEMBERS} members; remove one to add another.`);
    expect(await addMember(owner, project.id, last, 'EDITOR')).toMatchObject({ __typename: 'ProjectMember', role: 'EDITOR' });
    const members = (await projectAs(owner.client, project.id))!.members;
    expect(members).toHaveLength(MAX_PROJECT_MEMBERS);
    expect(members.map((member) => member.user.email)).not.toContain(oneTooMany.email);
  });

  it('answers an unknown email with a NotFoundError and a malformed one with a ValidationError', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client);

    const unknown = (await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: `nobody-${crypto.randomUUID()}@example.com`, role: 'EDITOR' },
    })).addProjectMember;
    expectTypename(unknown, 'NotFoundError');

    const malformed = (await owner.client.expectNoErrors(MutationFieldErrorsDocument.addMember, {
      input: { projectId: project.id, email: 'not an email', role: 'EDITOR' },
    })).addProjectMember;
    expect(malformed.__typename).toBe('ValidationError');
    expect(malformed.fieldErrors?.map((e) => e.path)).toEqual([['email']]);

    expect((await projectAs(owner.client, project.id))!.members).toHaveLength(1);
  });

  it('lets only owners manage members: editors and viewers get a ForbiddenError', async () => {
    const { owner, editor, viewer, project } = await team();
    const outsider = await signUp(server);
    const before = (await projectAs(owner.client, project.id))!;

    for (const member of [editor, viewer]) {
      expectTypename(await addMember(member, project.id, outsider, 'VIEWER'), 'ForbiddenError');
      expectTypename(await addMember(member, project.id, member, 'OWNER'), 'ForbiddenError');
      const { removeProjectMember } = await member.client.expectNoErrors(RemoveProjectMemberDocument, {
        input: { projectId: project.id, userId: memberId(before, owner.email) },
      });
      expectTypename(removeProjectMember, 'ForbiddenError');
    }

    expect((await projectAs(owner.client, project.id))!.members).toEqual(before.members);
    expect(await projectAs(outsider.client, project.id)).toBeNull();
  });

  it('removes a member, who then no longer sees the project', async () => {
    const { owner, editor, viewer, project } = await team();
    const details = (await projectAs(owner.client, project.id))!;

    const { removeProjectMember } = await owner.client.expectNoErrors(RemoveProjectMemberDocument, {
      input: { projectId: project.id, userId: memberId(details, editor.email) },
    });
    expect(removeProjectMember).toEqual({ __typename: 'Project', id: project.id });

    expect((await projectAs(owner.client, project.id))!.members.map((m) => m.user.email).sort()).toEqual([owner.email, viewer.email].sort());
    expect(await projectAs(editor.client, project.id)).toBeNull();
    expect(await allProjectIds(editor.client)).toEqual([]);
    const { updateProject } = await editor.client.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'Mine now' } });
    expectTypename(updateProject, 'NotFoundError');

    // Removing them again: they are not a member.
    const { removeProjectMember: again } = await owner.client.expectNoErrors(RemoveProjectMemberDocument, {
      input: { projectId: project.id, userId: memberId(details, editor.email) },
    });
    expectTypename(again, 'NotFoundError');
  });

  it('keeps the creator an owner: they cannot be removed or demoted', async () => {
    const { owner, project } = await team();
    const ownerId = memberId((await projectAs(owner.client, project.id))!, owner.email);

    const { removeProjectMember } = await owner.client.expectNoErrors(RemoveProjectMemberDocument, {
      input: { projectId: project.id, userId: ownerId },
    });
    expectTypename(removeProjectMember, 'InvalidStateError');
    expectTypename(await addMember(owner, project.id, owner, 'EDITOR'), 'InvalidStateError');
    expect((await projectAs(owner.client, project.id))?.viewerRole).toBe('OWNER');
  });

  it('lets an editor rename the project but not archive it; a viewer can do neither', async () => {
    const { owner, editor, viewer, project } = await team();

    const { updateProject: renamed } = await editor.client.expectNoErrors(UpdateProjectDocument, {
      input: { id: project.id, name: 'Renamed by editor' },
    });
    expect(expectTypename(renamed, 'Project')).toMatchObject({ name: 'Renamed by editor', viewerRole: 'EDITOR' });

    expectTypename((await editor.client.expectNoErrors(ArchiveProjectDocument, { id: project.id })).archiveProject, 'ForbiddenError');
    expectTypename(
      (await viewer.client.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'Renamed by viewer' } })).updateProject,
      'ForbiddenError',
    );
    expectTypename((await viewer.client.expectNoErrors(ArchiveProjectDocument, { id: project.id })).archiveProject, 'ForbiddenError');

    expect(await projectAs(owner.client, project.id)).toMatchObject({ name: 'Renamed by editor', archivedAt: null });
  });

  it('shows each member their own viewerRole', async () => {
    const { owner, editor, viewer, project } = await team();
    expect((await projectAs(owner.client, project.id))?.viewerRole).toBe('OWNER');
    expect((await projectAs(editor.client, project.id))?.viewerRole).toBe('EDITOR');
    expect((await projectAs(viewer.client, project.id))?.viewerRole).toBe('VIEWER');
    const { projects } = await viewer.client.expectNoErrors(ProjectsDocument, {});
    expect(projects.edges.map((e) => [e.node.id, e.node.viewerRole])).toEqual([[project.id, 'VIEWER']]);
  });
});

// ------------------------------------------------------------------ isolation

describe("another user's project", () => {
  it('is invisible: not in projects, project(id) and node(id) give no project', async () => {
    const [a, b] = await Promise.all([signUp(server), signUp(server)]);
    const project = await createProject(a.client);
    await createProject(b.client);

    expect(await allProjectIds(b.client)).not.toContain(project.id);
    const { projects } = await b.client.expectNoErrors(ProjectsDocument, {});
    expect(projects.totalCount).toBe(1);
    expect((await b.client.request(ProjectByIdDocument, { id: project.id })).data?.project ?? null).toBeNull();
    expect((await b.client.request(NodeDocument, { id: project.id })).data?.node ?? null).toBeNull();
  });

  it('cannot be changed: update, archive and membership changes are NotFoundError (never Forbidden), and nothing changes', async () => {
    const [a, b] = await Promise.all([signUp(server), signUp(server)]);
    const project = await createProject(a.client, { name: "A's project", description: 'Untouched' });
    const before = await projectAs(a.client, project.id);
    const ownerId = memberId(before!, a.email);

    const results = [
      (await b.client.expectNoErrors(UpdateProjectDocument, { input: { id: project.id, name: 'Hijacked' } })).updateProject,
      (await b.client.expectNoErrors(ArchiveProjectDocument, { id: project.id })).archiveProject,
      await addMember(b, project.id, b, 'OWNER'),
      (await b.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: project.id, userId: ownerId } })).removeProjectMember,
    ];

    // The same answer as for a project that does not exist.
    const { updateProject: missing } = await b.client.expectNoErrors(UpdateProjectDocument, { input: { id: unknownProjectId(), name: 'x' } });
    for (const result of results) {
      expectTypename(result, 'NotFoundError');
      expect(result).toEqual(missing);
    }
    expect(await projectAs(a.client, project.id)).toEqual(before);
    expect(await allProjectIds(b.client)).toEqual([]);
  });
});

// ------------------------------------------------------------------ bad input

describe('bad input', () => {
  const badCreates: Array<[what: string, input: { name: string; description?: string }, field: string]> = [
    ['an empty name', { name: '' }, 'name'],
    ['a whitespace name', { name: '   \t ' }, 'name'],
    ['a 101-character name', { name: 'n'.repeat(101) }, 'name'],
    ['a 2001-character description', { name: 'Fine', description: 'd'.repeat(2001) }, 'description'],
  ];

  it.each(badCreates)('refuses to create a project with %s: ValidationError on that field, nothing created', async (_what, input, field) => {
    const owner = await signUp(server);

    const { createProject: result } = await owner.client.expectNoErrors(CreateProjectDocument, { input: { ...input, target: 'WEB' } });

    const error = expectTypename(result, 'ValidationError');
    expect(error.fieldErrors.map((e) => e.path)).toEqual([[field]]);
    expect(error.fieldErrors[0]!.message).not.toBe('');
    expect(await allProjectIds(owner.client)).toEqual([]);
  });

  it('accepts the longest name and description', async () => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'n'.repeat(100), description: 'd'.repeat(2000) });
    expect(project.name).toHaveLength(100);
    expect(project.description).toHaveLength(2000);
  });

  it.each([
    ['an empty name', { name: '' }, 'name'],
    ['a whitespace name', { name: '   ' }, 'name'],
    ['a 101-character name', { name: 'n'.repeat(101) }, 'name'],
    ['a 2001-character description', { description: 'd'.repeat(2001) }, 'description'],
  ])('refuses to update a project with %s, and nothing changes', async (_what, change, field) => {
    const owner = await signUp(server);
    const project = await createProject(owner.client, { name: 'Stable', description: 'Stable too' });
    const before = await projectAs(owner.client, project.id);

    const { updateProject: result } = await owner.client.expectNoErrors(UpdateProjectWithFieldErrorsDocument, {
      input: { id: project.id, ...change },
    });

    expect(result.__typename).toBe('ValidationError');
    expect(result.fieldErrors?.map((e) => e.path)).toEqual([[field]]);
    expect(await projectAs(owner.client, project.id)).toEqual(before);
  });

  it('refuses bad ids (garbage, a User id, an unknown project) in every mutation, and nothing changes', async () => {
    const { owner, editor, project } = await team();
    const before = await projectAs(owner.client, project.id);
    const userId = memberId(before!, owner.email);
    const editorId = memberId(before!, editor.email);

    for (const [id, expected] of [
      ['garbage', 'ValidationError'],
      [userId, 'ValidationError'],
      [unknownProjectId(), 'NotFoundError'],
    ] as const) {
      const update = (await owner.client.expectNoErrors(UpdateProjectWithFieldErrorsDocument, { input: { id, name: 'Changed' } })).updateProject;
      const archive = (await owner.client.expectNoErrors(MutationFieldErrorsDocument.archive, { id })).archiveProject;
      const add = (await owner.client.expectNoErrors(MutationFieldErrorsDocument.addMember, {
        input: { projectId: id, email: editor.email, role: 'OWNER' },
      })).addProjectMember;
      const remove = (await owner.client.expectNoErrors(MutationFieldErrorsDocument.removeMember, {
        input: { projectId: id, userId: editorId },
      })).removeProjectMember;

      for (const [result, path] of [[update, ['id']], [archive, ['id']], [add, ['projectId']], [remove, ['projectId']]] as const) {
        expect(result.__typename, `${id}: ${JSON.stringify(result)}`).toBe(expected);
        if (expected === 'ValidationError') expect(result.fieldErrors?.map((e) => e.path)).toEqual([path]);
      }
    }

    // A Project id where a User id is expected.
    const { removeProjectMember: wrongKind } = await owner.client.expectNoErrors(MutationFieldErrorsDocument.removeMember, {
      input: { projectId: project.id, userId: project.id },
    });
    expect(wrongKind.__typename).toBe('ValidationError');
    expect(wrongKind.fieldErrors?.map((e) => e.path)).toEqual([['userId']]);

    expect(await projectAs(owner.client, project.id)).toEqual(before);
    expect(await projectAs(editor.client, project.id)).toMatchObject({ viewerRole: 'EDITOR' });
  });
});

// ------------------------------------------------------------------ unexpected failures

describe('an unexpected failure', () => {
  /** Statements matching this fail once, as a dropped database connection would. */
  let failNext: RegExp | undefined;
  /** The read of one session when a token is verified. */
  const SESSION_READ = /from "auth_sessions" where \("auth_sessions"\."id" = /i;
  const logLines: Record<string, unknown>[] = [];
  const logs = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const failing = useTestServer(
    { LOG_LEVEL: 'error' },
    {
      logTo: logs,
      onQuery: (query) => {
        if (failNext?.test(query)) {
          failNext = undefined;
          throw new Error('connection terminated unexpectedly (injected by the test)');
        }
      },
    },
  );

  it('is masked as "Unexpected error." with a request id that is also in the log, and changes nothing', async () => {
    const owner = await signUp(failing);

    failNext = /insert into "projects"/i;
    const response = await owner.client.request(CreateProjectDocument, { input: { name: 'Doomed', target: 'WEB' } });
    expect(failNext).toBeUndefined();

    const error = onlyError(response);
    expect(error.message).toBe('Unexpected error.');
    expect(JSON.stringify(response)).not.toContain('injected');
    expect(error.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    const requestId = error.extensions?.requestId;
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(logLines.some((line) => line.requestId === requestId && JSON.stringify(line).includes('injected'))).toBe(true);
    expect(await allProjectIds(owner.client)).toEqual([]);
  });

  it('while the token is verified (its session cannot be read) is masked alike: a 500 whose request id the log has, with the cause, once', async () => {
    const owner = await signUp(failing);

    failNext = SESSION_READ;
    const response = await owner.client.post({ query: print(ViewerDocument) });
    expect(failNext).toBeUndefined();

    expect(response.status).toBe(500);
    const body = (await response.json()) as GraphQLResponse<unknown>;
    expect(JSON.stringify(body)).not.toContain('injected');
    expect(body.errors).toEqual([{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) } }]);
    const requestId = body.errors![0]!.extensions!.requestId;
    expect(logLines.filter((line) => line.requestId === requestId && JSON.stringify(line).includes('injected'))).toHaveLength(1);
    // The next request verifies the same token again, and is answered.
    expect(await owner.client.expectNoErrors(ViewerDocument, {})).toEqual({ viewer: { id: owner.id, email: owner.email } });
  });
});
