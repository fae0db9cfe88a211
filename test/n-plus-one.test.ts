import { beforeAll, describe, expect, it } from 'vitest';
import { AddProjectMemberDocument } from './gql/graphql.js';
import { createProject, document, signUp, type TestUser } from './support/fixtures.js';
import { useTestServer } from './support/server.js';

// STYLE 8: list fields load through DataLoaders. The SQL statements of one nested
// query are counted at the database driver; the count must not grow with the list.

const MembersOfProjectsDocument = document<
  { projects: { edges: { node: { id: string; members: { role: string; user: { id: string; email: string } }[] } }[] } },
  Record<string, never>
>(/* GraphQL */ `
  query MembersOfProjects {
    projects(first: 50) {
      edges { node { id members { role user { id email } } } }
    }
  }
`);

/** Every SQL statement the server sends, in order. */
const statements: string[] = [];
const app = useTestServer({}, { onQuery: (query) => void statements.push(query) });

describe('N+1: nested lists load in batches', () => {
  let owner: TestUser;
  const emailsByProject = new Map<string, string[]>();

  /** `count` more projects, each with the owner and two members of its own (three members). */
  async function addProjects(count: number) {
    const members = await Promise.all(Array.from({ length: count * 2 }, () => signUp(app)));
    for (let i = 0; i < count; i++) {
      const project = await createProject(owner.client);
      const pair = members.slice(i * 2, i * 2 + 2);
      for (const [member, role] of [[pair[0]!, 'EDITOR'], [pair[1]!, 'VIEWER']] as const) {
        const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
          input: { projectId: project.id, email: member.email, role },
        });
        expect(addProjectMember.__typename).toBe('ProjectMember');
      }
      emailsByProject.set(project.id, [owner.email, ...pair.map((m) => m.email)].sort());
    }
  }

  /** The statements of one `projects { members { user } }` query, after checking its answer. */
  async function statementsOfOneQuery(): Promise<string[]> {
    statements.length = 0;
    const { projects } = await owner.client.expectNoErrors(MembersOfProjectsDocument);
    const seen = [...statements];

    expect(projects.edges).toHaveLength(emailsByProject.size);
    for (const { node } of projects.edges) {
      expect(node.members.map((m) => m.user.email).sort()).toEqual(emailsByProject.get(node.id));
      expect(node.members.map((m) => m.role).sort()).toEqual(['EDITOR', 'OWNER', 'VIEWER']);
    }
    return seen;
  }

  beforeAll(async () => {
    owner = await signUp(app);
  });

  it('runs the same statements for 20 projects as for 10 (3 members each, none shared)', async () => {
    await addProjects(10);
    const withTen = await statementsOfOneQuery();

    await addProjects(10);
    const withTwenty = await statementsOfOneQuery();

    expect(withTen.length).toBeGreaterThan(0);
    // Each member's user comes in the members' own statement, never read apart from it afterwards.
    expect(withTwenty.filter((statement) => /from "users"/.test(statement))).toEqual([]);
    // The count only: the text differs where an `in (...)` list names more ids.
    expect(withTwenty.length, `with 10:\n${withTen.join('\n')}\nwith 20:\n${withTwenty.join('\n')}`).toBe(withTen.length);
  });
});
