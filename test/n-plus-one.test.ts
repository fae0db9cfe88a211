import { createHash, randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildLogLines, generationChunks, generationFiles, generations } from '../src/db/schema.js';
import { AddProjectMemberDocument } from './gql/graphql.js';
import { createProject, document, signUp, type TestUser } from './support/fixtures.js';
import { rawId } from './support/generation-helpers.js';
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
// The nested queries below may weigh more than one operation is let to (GRAPHQL_MAX_COST prices
// each generation's output at its largest); the limit is not what this suite is about.
const app = useTestServer({ GRAPHQL_MAX_COST: '10000000' }, { onQuery: (query) => void statements.push(query) });

/**
 * The statements `run` makes the server send: the fewest of three runs. The worker's lease
 * recovery and queue scan (every few seconds) may land in one run and add statements of their
 * own; they never take any away.
 */
async function statementsOf(run: () => Promise<unknown>): Promise<string[]> {
  let fewest: string[] | undefined;
  for (let i = 0; i < 3; i++) {
    statements.length = 0;
    await run();
    if (!fewest || statements.length < fewest.length) fewest = [...statements];
  }
  return fewest!;
}

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

  /** The statements of one `projects { members { user } }` query (the fewest of three, as statementsOf), after checking its answer. */
  async function statementsOfOneQuery(): Promise<string[]> {
    return statementsOf(async () => {
      const { projects } = await owner.client.expectNoErrors(MembersOfProjectsDocument);
      expect(projects.edges).toHaveLength(emailsByProject.size);
      for (const { node } of projects.edges) {
        expect(node.members.map((m) => m.user.email).sort()).toEqual(emailsByProject.get(node.id));
        expect(node.members.map((m) => m.role).sort()).toEqual(['EDITOR', 'OWNER', 'VIEWER']);
      }
    });
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

const VersionDocument = document<{ generation: { files: { path: string; size: number; content: string }[] } | null }, { id: string }>(/* GraphQL */ `
  query Version($id: ID!) {
    generation(id: $id) { files { path size content } }
  }
`);

const GenerationsOfProjectDocument = document<
  {
    project: {
      generations: {
        edges: {
          node: {
            id: string;
            output: string;
            files: { path: string; content: string }[];
            file: { path: string; content: string } | null;
            missing: { path: string } | null;
            buildLog: { seq: number; text: string }[];
            whole: { seq: number }[];
          };
        }[];
      };
    } | null;
  },
  { id: string }
>(/* GraphQL */ `
  query GenerationsOfProject($id: ID!) {
    project(id: $id) {
      generations(first: 20) {
        edges {
          node {
            id
            output
            files { path content }
            file(path: "src/App.tsx") { path content }
            missing: file(path: "src/nope.ts") { path }
            buildLog(tail: 2) { seq text }
            whole: buildLog { seq }
          }
        }
      }
    }
  }
`);

const GenerationsOfProjectsDocument = document<
  { projects: { edges: { node: { id: string; generations: { totalCount: number; edges: { node: { id: string } }[] } } }[] } },
  Record<string, never>
>(/* GraphQL */ `
  query GenerationsOfProjects {
    projects(first: 50) {
      edges { node { id generations(first: 2) { totalCount edges { node { id } } } } }
    }
  }
`);

describe('N+1: the versions, outputs and build logs of generations load in batches', () => {
  const db = () => app.database.db;
  const file = (path: string, content: string) => ({ path, content, size: Buffer.byteLength(content), sha256: createHash('sha256').update(content).digest('hex') });

  /** A SUCCEEDED generation of `projectId` (a global id), written as the pipeline would have: `n` chunks, `n` log lines, `files`. */
  async function addGeneration(user: TestUser, projectId: string, n: number, files: ReturnType<typeof file>[], createdAt: Date) {
    const id = randomUUID();
    await db().insert(generations).values({
      id,
      projectId: rawId(projectId),
      createdBy: rawId(user.id),
      sessionId: randomUUID(),
      prompt: 'p',
      provider: 'offline',
      model: 'offline',
      status: 'SUCCEEDED',
      phase: 'DONE',
      createdAt,
      startedAt: createdAt,
      finishedAt: createdAt,
    });
    await db().insert(generationChunks).values(Array.from({ length: n }, (_, seq) => ({ generationId: id, seq, text: `${id.slice(0, 8)}:${seq};` })));
    await db().insert(buildLogLines).values(Array.from({ length: n }, (_, seq) => ({ generationId: id, seq, step: 'build', stream: 'STDOUT' as const, text: `line ${seq}` })));
    if (files.length > 0) await db().insert(generationFiles).values(files.map((f) => ({ ...f, generationId: id })));
    return id;
  }

  it("reads the contents of a version's files in the same statements for 200 files as for 20", async () => {
    const user = await signUp(app);
    const project = await createProject(user.client);
    const pages = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => file(`src/page${String(from + i).padStart(3, '0')}.ts`, `export default ${from + i};\n`));
    const id = await addGeneration(user, project.id, 1, pages(0, 20), new Date());
    const globalId = encodeGlobalID('Generation', id);

    let expected = pages(0, 20);
    const query = async () => {
      const { generation } = await user.client.expectNoErrors(VersionDocument, { id: globalId });
      expect(generation!.files).toEqual(expected.map(({ path, size, content }) => ({ path, size, content })));
    };

    const withTwenty = await statementsOf(query);
    await db().insert(generationFiles).values(pages(20, 200).map((f) => ({ ...f, generationId: id })));
    expected = pages(0, 200);
    const withTwoHundred = await statementsOf(query);
    expect(withTwoHundred.length, `with 20 files:\n${withTwenty.join('\n')}\nwith 200:\n${withTwoHundred.join('\n')}`).toBe(withTwenty.length);
  });

  it('reads output, files, file and buildLog of 6 generations in the same statements as of 2', async () => {
    const user = await signUp(app);
    const project = await createProject(user.client);
    const ids: string[] = [];
    const add = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const n = ids.length + 1;
        const files = [file('src/App.tsx', `export default ${n};`), file(`src/only${n}.ts`, `${n}`)];
        ids.push(await addGeneration(user, project.id, n + 2, files, new Date(Date.UTC(2026, 0, 1, 0, 0, n))));
      }
    };
    const query = async () => {
      const { project: found } = await user.client.expectNoErrors(GenerationsOfProjectDocument, { id: project.id });
      const newestFirst = [...ids].reverse();
      expect(found!.generations.edges.map(({ node }) => node)).toEqual(
        newestFirst.map((id) => {
          const n = ids.indexOf(id) + 1;
          const seqs = Array.from({ length: n + 2 }, (_, seq) => seq);
          return {
            id: encodeGlobalID('Generation', id),
            output: seqs.map((seq) => `${id.slice(0, 8)}:${seq};`).join(''),
            files: [
              { path: 'src/App.tsx', content: `export default ${n};` },
              { path: `src/only${n}.ts`, content: `${n}` },
            ],
            file: { path: 'src/App.tsx', content: `export default ${n};` },
            missing: null,
            buildLog: seqs.slice(-2).map((seq) => ({ seq, text: `line ${seq}` })),
            whole: seqs.map((seq) => ({ seq })),
          };
        }),
      );
    };

    await add(2);
    const withTwo = await statementsOf(query);
    await add(4);
    const withSix = await statementsOf(query);
    expect(withSix.length, `with 2 generations:\n${withTwo.join('\n')}\nwith 6:\n${withSix.join('\n')}`).toBe(withTwo.length);
  });

  it('reads a page of generations of 10 projects in the same statements as of 3', async () => {
    const user = await signUp(app);
    const expected = new Map<string, { totalCount: number; newestFirst: string[] }>();
    const add = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const project = await createProject(user.client);
        const n = expected.size % 4; // 0 to 3 generations: some pages are short, some have more
        const made: string[] = [];
        for (let g = 0; g < n; g++) made.push(await addGeneration(user, project.id, 1, [], new Date(Date.UTC(2026, 0, 1, 0, 0, g))));
        expected.set(project.id, { totalCount: n, newestFirst: made.reverse().slice(0, 2) });
      }
    };
    const query = async () => {
      const { projects } = await user.client.expectNoErrors(GenerationsOfProjectsDocument);
      expect(projects.edges).toHaveLength(expected.size);
      for (const { node } of projects.edges) {
        const { totalCount, newestFirst } = expected.get(node.id)!;
        expect(node.generations).toEqual({ totalCount, edges: newestFirst.map((id) => ({ node: { id: encodeGlobalID('Generation', id) } })) });
      }
    };

    await add(3);
    const withThree = await statementsOf(query);
    await add(7);
    const withTen = await statementsOf(query);
    expect(withTen.length, `with 3 projects:\n${withThree.join('\n')}\nwith 10:\n${withTen.join('\n')}`).toBe(withThree.length);
  });
});
