import { describe, expect, it } from 'vitest';
import { CreateProjectDocument, StartGenerationDocument, UpdateProjectDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import {
  createProject,
  document,
  PASSWORD,
  SignUpWithFieldErrorsDocument,
  signUp,
  type TestUser,
  uniqueEmail,
} from './support/fixtures.js';
import { useStarted } from './support/lifecycle.js';
import { collect, liveClient } from './support/live.js';
import { useTestServer } from './support/server.js';

// A lone UTF-16 surrogate (JSON's "\ud800", half of a pair) cannot be stored as UTF-8: it
// would come back as U+FFFD, and a prompt or a name would no longer be what was sent. Any
// input carrying one is refused as bad input and changes nothing, over HTTP and graphql-ws;
// a password answers it with a ValidationError of its own, as before.

const LONE = 'A notes app \ud800 with tags';
const refusal = { message: expect.stringContaining('lone surrogate'), extensions: { code: 'BAD_USER_INPUT' } };

const CountsDocument = document<
  { projects: { totalCount: number }; project: { description: string | null; generations: { totalCount: number } } | null },
  { id: string }
>('query Counts($id: ID!) { projects { totalCount } project(id: $id) { description generations { totalCount } } }');

describe(`lone surrogates in text inputs (${databaseKind})`, () => {
  const server = useTestServer();
  // Nothing to stop: the user goes with the server.
  const owner = useStarted<TestUser>(() => signUp(server), async () => {});

  it('refuses them in a name, a description and a prompt, and changes nothing', async () => {
    const project = await createProject(owner.client, { description: 'As it was' });
    const counts = async () => owner.client.expectNoErrors(CountsDocument, { id: project.id });
    const before = await counts();

    const attempts = [
      owner.client.request(CreateProjectDocument, { input: { name: LONE, target: 'WEB' } }),
      owner.client.request(UpdateProjectDocument, { input: { id: project.id, description: LONE } }),
      owner.client.request(StartGenerationDocument, { input: { projectId: project.id, prompt: LONE } }),
      // A low surrogate alone, at the end.
      owner.client.request(StartGenerationDocument, { input: { projectId: project.id, prompt: 'A timer \udc00' } }),
    ];
    for (const response of await Promise.all(attempts)) expect(response).toEqual({ errors: [refusal] });

    expect(await counts()).toEqual(before);
    expect(before.project).toMatchObject({ description: 'As it was', generations: { totalCount: 0 } });
  });

  it('refuses them over graphql-ws too', async () => {
    const live = liveClient(server.url, owner.accessToken);
    try {
      const created = collect(live.client, CreateProjectDocument, { input: { name: LONE, target: 'WEB' } });
      expect(await created.ended).toEqual({ errors: [refusal] });
    } finally {
      await live.dispose();
    }
  });

  it('keeps text with characters beyond the BMP (a surrogate pair) as sent', async () => {
    const name = 'Notes 📝 𝒜';
    expect(await createProject(owner.client, { name })).toMatchObject({ name });
  });

  it('leaves a password to answer with its own ValidationError', async () => {
    const { signUp: result } = await server.client().expectNoErrors(SignUpWithFieldErrorsDocument, { email: uniqueEmail(), password: `${PASSWORD}\ud800` });
    expect(result.__typename).toBe('ValidationError');
    expect(result.fieldErrors?.map((error) => error.path)).toEqual([['password']]);
  });
});
