import { encodeGlobalID } from '@pothos/plugin-relay';
import { beforeAll, describe, expect, it } from 'vitest';
import { GenerationChunksDocument, GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, document } from './support/fixtures.js';
import { startAccepted, startGeneration, within } from './support/generation-helpers.js';
import { collect, liveClient, sseSubscribe } from './support/live.js';
import { useGenerationServer } from './support/suite-server.js';

// Bad input is answered as bad input, never as "Unexpected error.": NUL characters
// anywhere, malformed ids inside node/nodes (each is null on its own), arguments out of
// range; names refuse control and bidi-override characters.

type Errors = { message: string; extensions?: Record<string, unknown> }[] | undefined;

describe(`bad input (${databaseKind})`, () => {
  const suite = useGenerationServer();
  let projectId: string;

  beforeAll(async () => {
    projectId = (await createProject(suite.owner.client, { target: 'FLUTTER' })).id;
  });

  const send = async (query: string, variables?: Record<string, unknown>) =>
    (await (await suite.owner.client.post({ query, variables })).json()) as { data?: Record<string, unknown> | null; errors?: Errors };
  const expectBadInput = (errors: Errors) => {
    expect(errors, 'no error at all').toBeDefined();
    for (const error of errors!) {
      expect(error.message).not.toBe('Unexpected error.');
      expect(error.extensions?.code).toBe('BAD_USER_INPUT');
    }
  };

  it('refuses NUL characters in variables and in literals, on any field', async () => {
    expectBadInput((await send(`mutation($n: String!) { createProject(input: { name: $n, target: WEB }) { __typename } }`, { n: 'a\u0000b' })).errors);
    expectBadInput((await send(`mutation { startGeneration(input: { projectId: "${projectId}", prompt: "make \\u0000 it" }) { __typename } }`)).errors);
    expectBadInput((await send(`mutation($e: String!) { signIn(input: { email: $e, password: "long enough password" }) { __typename } }`, { e: 'a\u0000@example.com' })).errors);
    expectBadInput((await send(`query { project(id: "\\u0000") { name } }`)).errors);
    // Over graphql-ws too.
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const refused = collect(live.client, GenerationUpdatedDocument, { id: 'x\u0000y' });
      const outcome = await within(refused.ended, 10_000, () => 'the subscription was not refused');
      expectBadInput(outcome.errors ?? (outcome.error as Errors));
    } finally {
      await live.dispose();
    }
  });

  it('answers variables that do not fit a subscription alike over graphql-ws and SSE, with nothing of the server\'s own (http) in it', async () => {
    const generation = await startAccepted(suite.owner.client, { projectId, prompt: 'A counter' });
    const variables = { id: generation.id, afterSeq: 'abc' } as unknown as { id: string; afterSeq: number };
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const overWs = await within(collect(live.client, GenerationChunksDocument, variables).ended, 10_000, () => 'graphql-ws did not answer');
      const overSse = await within(sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationChunksDocument, variables).ended, 10_000, () => 'SSE did not answer');
      const refusal = [{ message: expect.stringContaining('Variable "$afterSeq" got invalid value "abc"'), locations: [expect.any(Object)], extensions: { code: 'BAD_USER_INPUT' } }];
      expect(overWs.errors).toEqual(refusal);
      expect(overSse.errors).toEqual(overWs.errors);
    } finally {
      await live.dispose();
    }
  });

  it('answers null for each malformed or unknown id in node and nodes, and the rest as usual', async () => {
    const b64 = (text: string) => Buffer.from(text).toString('base64');
    const ids = [
      projectId,
      'not base64 at all!',
      b64('Project:not-a-uuid'),
      b64('NoSuchType:1'),
      encodeGlobalID('Generation', '00000000-0000-4000-8000-000000000000'),
      '',
    ];
    const nodes = await send(`query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }`, { ids });
    expect(nodes).toEqual({ data: { nodes: [{ __typename: 'Project', id: projectId }, null, null, null, null, null] } });
    for (const id of ids.slice(1)) {
      expect(await send(`query($id: ID!) { node(id: $id) { id } }`, { id }), id).toEqual({ data: { node: null } });
    }
  });

  it('filters generations by a status list of 70,000 repeats as by its distinct statuses, at once', async () => {
    // One parameter each would be past the 65,535 a statement may take: the database refused it, and the refusal read as an outage.
    const query = 'query($id: ID!, $status: [GenerationStatus!]) { project(id: $id) { generations(first: 5, status: $status) { totalCount } } }';
    const distinct = await send(query, { id: projectId, status: ['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'] });
    const repeated = await send(query, { id: projectId, status: Array.from({ length: 70_000 }, (_, i) => (['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'] as const)[i % 5]) });
    expect(repeated).toEqual(distinct);
    expect(distinct.data).toEqual({ project: { generations: { totalCount: expect.any(Number) } } });
  });

  it('answers an out-of-range buildLog(tail:) as a validation error', async () => {
    const generation = await startAccepted(suite.owner.client, { projectId, prompt: 'A counter' });
    for (const tail of [0, -5, 1001, 2_000_000]) {
      const response = await send(`query($id: ID!, $tail: Int!) { generation(id: $id) { buildLog(tail: $tail) { seq } } }`, { id: generation.id, tail });
      expectBadInput(response.errors);
      expect(response.errors![0]!.extensions?.fieldErrors, String(tail)).toEqual([expect.objectContaining({ path: ['tail'] })]);
    }
  });

  const CreateProject = document<
    { createProject: { __typename: string; name?: string; description?: string | null; fieldErrors?: { path: string[]; message: string }[] } },
    { name: string; description?: string }
  >(/* GraphQL */ `
    mutation CreateWithFieldErrors($name: String!, $description: String) {
      createProject(input: { name: $name, description: $description, target: WEB }) {
        __typename
        ... on Project { name description }
        ... on ValidationError { fieldErrors { path message } }
      }
    }
  `);

  it('refuses control and bidi-override characters in names, with the field that has them', async () => {
    for (const name of ['invoice\u202Etxt.exe', 'bell\u0007', 'tab\there', 'line\nbreak', 'line\u2028separator', 'paragraph\u2029separator', 'isolate\u2066x\u2069', 'escape\u001b[31m']) {
      const { createProject } = await suite.owner.client.expectNoErrors(CreateProject, { name });
      expect(createProject, JSON.stringify(name)).toMatchObject({
        __typename: 'ValidationError',
        fieldErrors: [{ path: ['name'], message: expect.stringMatching(/^Name must not contain control characters, line separators or bidirectional overrides$/) }],
      });
    }
    const { createProject: badDescription } = await suite.owner.client.expectNoErrors(CreateProject, { name: 'Fine', description: 'evil\u202Edescription' });
    expect(badDescription).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: ['description'] }] });
    // Ordinary text, accents, emoji and a multi-line description are fine.
    const { createProject: fine } = await suite.owner.client.expectNoErrors(CreateProject, { name: 'Café ☕ — ünïcode 日本', description: 'Line one\nLine two\twith a tab' });
    expect(fine).toEqual({ __typename: 'Project', name: 'Café ☕ — ünïcode 日本', description: 'Line one\nLine two\twith a tab' });
  });

  it('refuses a name that shows as nothing (zero-width, blank fillers, marks on nothing), and keeps one whose joiners and marks sit on something', async () => {
    for (const name of ['\u200B', '\u2800', '\u3164', '\u200D\u200C', '\uFEFF \u200B', '\u00AD', '\uFE0F', '\u034F', '\u0301\u0308']) {
      const { createProject } = await suite.owner.client.expectNoErrors(CreateProject, { name });
      expect(createProject, JSON.stringify(name)).toEqual({ __typename: 'ValidationError', fieldErrors: [{ path: ['name'], message: 'Name must not be empty' }] });
    }
    for (const name of ['Family \u{1F468}\u200D\u{1F469}\u200D\u{1F467}', 'Cafe\u0301 \u2764\uFE0F', '\u0928\u092E\u0938\u094D\u0924\u0947']) {
      const { createProject } = await suite.owner.client.expectNoErrors(CreateProject, { name });
      expect(createProject, JSON.stringify(name)).toMatchObject({ __typename: 'Project', name });
    }
  });

  it('stores a description of nothing but blanks as none, as an update does', async () => {
    const { createProject } = await suite.owner.client.expectNoErrors(CreateProject, { name: 'Blank description', description: ' \n\t ' });
    expect(createProject).toEqual({ __typename: 'Project', name: 'Blank description', description: null });
  });

  it('keeps a prompt as it was sent, its indentation and line breaks, and refuses one that shows as nothing', async () => {
    const prompt = '    const x = 1; // keep this indented\n  fix it\n\n';
    const started = await startAccepted(suite.owner.client, { projectId, prompt });
    expect(started.prompt).toBe(prompt);
    for (const blank of [' \n\t ', '\u200B', '\u200B\n\uFEFF\u2800']) {
      const refused = await startGeneration(suite.owner.client, { projectId, prompt: blank });
      expect(refused, JSON.stringify(blank)).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: ['prompt'], message: 'Describe what to build' }] });
    }
  });
});
