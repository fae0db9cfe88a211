import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { startAccepted } from './support/generation-helpers.js';
import { parseEvents } from './support/live.js';
import { startTestServer, type TestServer } from './support/server.js';

// The head of an SSE stream (src/api/sse.ts writes its events): the event-stream headers,
// and the CORS headers of its own request only, whatever streams came before it.

const ALLOWED = 'https://app.example';

describe(`SSE response headers (${databaseKind})`, () => {
  let server: TestServer;
  let owner: TestUser;
  let generationId: string;

  beforeAll(async () => {
    // ROLE=api: nothing runs the generation, so its stream stays open.
    server = await startTestServer({ ROLE: 'api', CORS_ORIGINS: ALLOWED });
    owner = await signUp(server);
    const project = await createProject(owner.client);
    generationId = (await startAccepted(owner.client, { projectId: project.id, prompt: 'Headers' })).id;
  });

  afterAll(async () => {
    await server?.stop();
  });

  /** Opens the stream, reads its first event, closes it. */
  async function open(method: 'GET' | 'POST', origin?: string) {
    const controller = new AbortController();
    const query = print(GenerationUpdatedDocument);
    const variables = { id: generationId };
    const headers = { accept: 'text/event-stream', authorization: `Bearer ${owner.accessToken}`, ...(origin ? { origin } : {}) };
    const response =
      method === 'GET'
        ? await fetch(`${server.url}/graphql?${new URLSearchParams({ query, variables: JSON.stringify(variables) })}`, { headers, signal: controller.signal })
        : await fetch(`${server.url}/graphql`, {
            method: 'POST',
            headers: { ...headers, 'content-type': 'application/json' },
            body: JSON.stringify({ query, variables }),
            signal: controller.signal,
          });
    const events = parseEvents(response.body!);
    const first = (await events.next()).value;
    controller.abort();
    return { status: response.status, headers: response.headers, first };
  }

  it('sends the event-stream headers and the CORS headers of each request', async () => {
    const allowed = await open('POST', ALLOWED);
    expect(allowed.status).toBe(200);
    expect(Object.fromEntries(['content-type', 'cache-control', 'connection', 'content-encoding'].map((name) => [name, allowed.headers.get(name)]))).toEqual({
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'content-encoding': 'none',
    });
    expect(allowed.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(allowed.first).toMatchObject({ event: 'next' });
    expect(JSON.parse(allowed.first!.data)).toMatchObject({ data: { generationUpdated: { id: generationId, status: 'QUEUED' } } });

    // A later stream without an Origin gets no CORS headers left over from the first.
    const plain = await open('GET');
    expect(plain.status).toBe(200);
    expect(plain.headers.get('content-type')).toBe('text/event-stream');
    expect(plain.headers.get('access-control-allow-origin')).toBeNull();
    expect(plain.first).toMatchObject({ event: 'next' });
  });
});
