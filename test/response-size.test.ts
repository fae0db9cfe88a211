import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { repoRoot } from './support/generation-helpers.js';
import { startTestServer, type TestServer } from './support/server.js';

// Fields that return file contents, model output or logs are priced in the query cost
// by what they can return at worst, so aliases, fragments or pages of generations
// cannot multiply one response past GRAPHQL_MAX_COST. Every operation of the client
// contract stays well inside it.

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
});
