import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONVERSATION_MAX_CHARS, CONVERSATION_MAX_MESSAGES } from '../src/generations/store.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { rawId, repoRoot } from './support/generation-helpers.js';
import { startTestServer, type TestServer } from './support/server.js';

// Every field is priced in the query cost by what it can return at worst (text that can
// be long by its longest), as many times as it can appear, with a page or ids from a
// variable at the most they may be: so aliases, fragments, pages or nested lists cannot
// multiply one response past GRAPHQL_MAX_COST. Every operation of the client contract
// stays inside it.

type Response = { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] };

describe(`content fields in the query cost (${databaseKind})`, () => {
  let server: TestServer;
  let owner: TestUser;
  let projectId: string;
  const id = () => projectId;

  beforeAll(async () => {
    server = await startTestServer();
    owner = await signUp(server);
    projectId = (await createProject(owner.client)).id;
  });

  afterAll(async () => {
    await server?.stop();
  });

  const send = async (query: string, operationName?: string, variables?: Record<string, unknown>) =>
    (await (await owner.client.post({ query, operationName, variables })).json()) as Response;
  const tooComplex = (response: Response) => response.errors?.some((error) => error.extensions?.code === 'OPERATION_TOO_COMPLEX') ?? false;
  const aliased = (count: number, selection: string) => Array.from({ length: count }, (_, i) => `a${i}: ${selection}`).join(' ');

  /** Refused as a whole, before anything runs, saying only that it was too large. */
  const expectRefused = (response: Response) => {
    expect(response.data ?? null, JSON.stringify(response).slice(0, 300)).toBeNull();
    expect(response.errors?.map((error) => error.extensions?.code)).toEqual(['OPERATION_TOO_COMPLEX']);
    expect(response.errors![0]!.message).not.toMatch(/\d|cost|limit/i);
  };
  /** The review's generations: prompts of 20,000 control characters, 6 bytes of JSON each. */
  const seedPrompts = (count: number) =>
    server.database.db.execute(sql`insert into generations (project_id, created_by, session_id, prompt, provider, model, status, finished_at)
      select ${rawId(projectId)}, ${rawId(owner.id)}, gen_random_uuid(), repeat(chr(1), 20000), 'offline', 'offline', 'SUCCEEDED', now()
      from generate_series(1, ${count})`);
  /** Messages of a new session, oldest first, `chars` characters each, a second apart. */
  const seedConversation = async (count: number, chars: number) => {
    const session = randomUUID();
    await server.database.db.execute(sql`insert into conversation_messages (project_id, session_id, role, content, created_at)
      select ${rawId(projectId)}, ${session}, (case when i % 2 = 1 then 'USER' else 'MODEL' end)::message_role,
        i || repeat('x', ${chars} - length(i::text)), now() + i * interval '1 second'
      from generate_series(1, ${count}) i`);
    return session;
  };

  it('lets every operation of the client contract through', async () => {
    const contract = await readFile(`${repoRoot}/contract/operations.graphql`, 'utf8');
    const response = await send(contract, 'Viewer');
    expect(tooComplex(response), JSON.stringify(response.errors)).toBe(false);
  });

  it('refuses model output repeated through aliases past the limit, and runs a few', async () => {
    const few = await send(`query { project(id: "${id()}") { generations(first: 1) { edges { node { ${aliased(2, 'output')} } } } } }`);
    expect(few.errors).toBeUndefined();
    expect(tooComplex(await send(`query { node(id: "${id()}") { ... on Generation { ${aliased(5, 'output')} } } }`))).toBe(true);
  });

  it('refuses file contents, patches and logs multiplied by aliases or fragments', async () => {
    expect(tooComplex(await send(`query { node(id: "${id()}") { ... on Generation { ${aliased(5, 'files { content }')} } } }`))).toBe(true);
    expect(tooComplex(await send(`query { node(id: "${id()}") { ... on Generation { ${aliased(13, 'buildLog(tail: 1000) { text }')} } } }`))).toBe(true);
    // One large log is fine.
    expect(tooComplex(await send(`query { node(id: "${id()}") { ... on Generation { buildLog(tail: 1000) { text } } } }`))).toBe(false);
    // The same selection reached through fragments counts every time.
    const spread = `fragment Out on Generation { output } query { node(id: "${id()}") { ...G } } fragment G on Generation { ${aliased(5, 'files { path }')} ...Out ...Out2 ...Out3 ...Out4 ...Out5 }
      fragment Out2 on Generation { o2: output } fragment Out3 on Generation { o3: output } fragment Out4 on Generation { o4: output } fragment Out5 on Generation { o5: output }`;
    expect(tooComplex(await send(spread))).toBe(true);
  });

  it('prices a diff by its patches even when none is asked for: a page of diffs is refused, one diff runs', async () => {
    expect(tooComplex(await send(`query { project(id: "${id()}") { generations(first: 10) { edges { node { diff { additions } } } } } }`))).toBe(true);
    const one = await send(`query { project(id: "${id()}") { generations(first: 1) { edges { node { diff { additions files { patch } } } } } } }`);
    expect(one.errors).toBeUndefined();
  });

  it('prices every alias of a diff\'s patches as the whole patch: one is answered, two are refused', async () => {
    const diff = (selection: string) => `query { node(id: "${id()}") { ... on Generation { diff { files { ${selection} } } } } }`;
    expect(tooComplex(await send(diff('patch')))).toBe(false);
    expectRefused(await send(diff(aliased(2, 'patch'))));
  });

  it('prices an error message at its longest: a page of them is answered, nested pages are refused', async () => {
    const errors = (first: number) => `query { project(id: "${id()}") { generations(first: ${first}) { edges { node { error { message } } } } } }`;
    expect(tooComplex(await send(errors(100)))).toBe(false);
    expectRefused(
      await send(`query { project(id: "${id()}") { generations(first: 100) { edges { node { project { generations(first: 100) { edges { node { error { message } } } } } } } } } }`),
    );
  });

  it('counts content once per item of a page', async () => {
    expect(tooComplex(await send(`query { projects(first: 10) { edges { node { generations(first: 10) { edges { node { output } } } } } } }`))).toBe(true);
    expect(tooComplex(await send(`query { projects(first: 10) { edges { node { generations(first: 10) { edges { node { id status } } } } } } }`))).toBe(false);
  });

  it('counts content once per id given to nodes, which takes at most 100 ids', async () => {
    const outputs = 'query Outputs($ids: [ID!]!) { nodes(ids: $ids) { ... on Generation { output } } }';
    const ids = (count: number) => Array.from({ length: count }, () => id());
    expect(tooComplex(await send(`query { nodes(ids: ${JSON.stringify(ids(5))}) { ... on Generation { output } } }`))).toBe(true);
    // A variable may hold as many ids as nodes takes.
    expect(tooComplex(await send(outputs, undefined, { ids: ids(1) }))).toBe(true);
    const one = await send(`query { nodes(ids: ${JSON.stringify(ids(1))}) { ... on Generation { output } } }`);
    expect(one.errors).toBeUndefined();
    // Ids alone cost nothing: a hundred are answered, one more is refused.
    const hundred = await send('query Ids($ids: [ID!]!) { nodes(ids: $ids) { id } }', undefined, { ids: ids(100) });
    expect(hundred.errors).toBeUndefined();
    expect((hundred.data as { nodes: unknown[] }).nodes).toHaveLength(100);
    const more = await send('query Ids($ids: [ID!]!) { nodes(ids: $ids) { id } }', undefined, { ids: ids(101) });
    expect(more.data ?? null).toBeNull();
    expect(more.errors?.map((error) => [error.extensions?.code, error.message])).toEqual([['BAD_USER_INPUT', 'nodes takes at most 100 ids.']]);
  });

  it('refuses nested pages of prompts whose size is a variable or left out, as if each were the largest page', async () => {
    await seedPrompts(11);
    const nested = (first: string) =>
      `project(id: $id) { generations${first} { edges { node { project { generations${first} { edges { node { prompt } } } } } } } }`;
    expectRefused(await send(`query Nested($id: ID!, $n: Int) { ${nested('(first: $n)')} }`, undefined, { id: id(), n: 100 }));
    expectRefused(await send(`query Nested($id: ID!, $n: Int) { ${nested('(first: $n)')} }`, undefined, { id: id(), n: 1 }));
    expectRefused(await send(`query Omitted($id: ID!) { ${nested('')} }`, undefined, { id: id() }));
    expectRefused(await send(`query Literal($id: ID!) { ${nested('(first: 100)')} }`, undefined, { id: id() }));

    // A normal page, its size in a variable, is answered whole.
    const page = await send('query Page($id: ID!, $n: Int) { project(id: $id) { generations(first: $n) { edges { node { id prompt } } } } }', undefined, {
      id: id(),
      n: 20,
    });
    expect(page.errors).toBeUndefined();
    const prompts = (page.data as { project: { generations: { edges: { node: { prompt: string } }[] } } }).project.generations.edges;
    expect(prompts.map((edge) => edge.node.prompt)).toEqual(Array.from({ length: 11 }, () => '\u0001'.repeat(20_000)));
  });

  it('refuses nodes(ids: $ids) as if it held as many ids as nodes takes, however few it holds', async () => {
    const inner = 'project { generations(first: $n) { edges { node { project { generations(first: $n) { edges { node { prompt } } } } } } } }';
    const aliases = (count: number) => Array.from({ length: count }, (_, i) => `a${i}: nodes(ids: $ids) { ... on Generation { ${inner} } }`).join(' ');
    for (const count of [1, 15]) {
      expectRefused(await send(`query Ids($ids: [ID!]!, $n: Int) { ${aliases(count)} }`, undefined, { ids: [], n: 1 }));
    }
  });

  it('prices a conversation as its bound all together: one is answered, aliases of it are refused', async () => {
    const session = await seedConversation(2, 20_000);
    const conversations = (count: number) =>
      `query Talk($id: ID!, $s: ID!) { project(id: $id) { ${Array.from({ length: count }, (_, i) => `c${i}: conversation(sessionId: $s) { content }`).join(' ')} } }`;
    const one = await send(conversations(1), undefined, { id: id(), s: session });
    expect(one.errors).toBeUndefined();
    expect((one.data as { project: { c0: unknown[] } }).project.c0).toHaveLength(2);
    // Each is priced at its whole bound: two already cost more than the limit.
    for (const count of [2, 15]) expectRefused(await send(conversations(count), undefined, { id: id(), s: session }));
  });

  it('shows the latest messages of a conversation, in order, leaving out the oldest past its bounds', async () => {
    const talk = async (session: string) => {
      const response = await send('query Talk($id: ID!, $s: ID!) { project(id: $id) { conversation(sessionId: $s) { role createdAt } } }', undefined, {
        id: id(),
        s: session,
      });
      expect(response.errors).toBeUndefined();
      return (response.data as { project: { conversation: { role: string; createdAt: string }[] } }).project.conversation;
    };
    // Too many messages: the newest CONVERSATION_MAX_MESSAGES, oldest first, a prompt before its answer.
    const many = await talk(await seedConversation(CONVERSATION_MAX_MESSAGES + 5, 10));
    expect(many).toHaveLength(CONVERSATION_MAX_MESSAGES);
    expect(many[0]!.role).toBe('MODEL'); // the sixth message
    expect(many.map((message) => message.createdAt)).toEqual(many.map((message) => message.createdAt).sort());
    // Too much content: the two newest hold the bound exactly, the oldest is left out.
    expect(await talk(await seedConversation(3, CONVERSATION_MAX_CHARS / 2))).toHaveLength(2);
    expect(await talk(await seedConversation(3, CONVERSATION_MAX_CHARS / 2 + 1))).toHaveLength(1);
  });

  it('runs nothing of a refused mutation', async () => {
    const count = async () => ((await send('query { projects { totalCount } }')).data as { projects: { totalCount: number } }).projects.totalCount;
    const before = await count();
    const mutation = `mutation Make($n: Int) { createProject(input: { name: "too big", target: WEB }) { ... on Project {
      generations(first: $n) { edges { node { project { generations(first: $n) { edges { node { prompt } } } } } } } } } }`;
    expectRefused(await send(mutation, undefined, { n: 1 }));
    expect(await count()).toBe(before);
  });
});
