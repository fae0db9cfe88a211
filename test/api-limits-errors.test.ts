import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { useStarted } from './support/lifecycle.js';
import { useTestServer } from './support/server.js';

// What a client is told when Kiln refuses a request: every refusal carries a code, and a
// document refused for its cost says what it cost and what the limit is. A screen's
// operations joined into one document (as Relay and Apollo send them) are not refused.

type Body = { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] };

describe(`refusals a client can act on (${databaseKind})`, () => {
  const server = useTestServer();
  // Nothing to stop: the user goes with the server.
  const owner = useStarted<TestUser>(() => signUp(server), async () => {});
  const maxCost = parseConfig({}).limits.maxCost;

  const post = async (body: unknown, headers: Record<string, string> = {}) => {
    const response = await owner.client.post(body, headers);
    return { status: response.status, body: (await response.json()) as Body };
  };

  it("lets the contract's Generation and GenerationFixes through as one query", async () => {
    const query = `query GenerationScreen($id: ID!) { generation(id: $id) {
      id status phase prompt output error { code message } files { path size sha256 }
      buildSteps { name command status exitCode durationMs } buildLog(tail: 200) { seq step stream text }
      diagnostics { round tool severity path line column code message }
      fixRounds { round status startedAt finishedAt usage { inputTokens outputTokens } } } }`;
    const project = await createProject(owner.client);
    const { status, body } = await post({ query, variables: { id: project.id } });
    expect(status).toBe(200);
    expect(body).toEqual({ data: { generation: null } });
  });

  it('refuses a document over the cost limit saying what it cost and what the limit is, in numbers', async () => {
    const query = 'query Outputs { projects(first: 5) { edges { node { generations(first: 3) { edges { node { output } } } } } } }';
    const { body } = await post({ query });
    expect(body.data ?? null).toBeNull();
    expect(body.errors).toHaveLength(1);
    const [refusal] = body.errors!;
    expect(refusal!.extensions).toEqual({ code: 'OPERATION_TOO_COMPLEX', cost: expect.any(Number), limit: maxCost });
    expect(refusal!.extensions!.cost).toBeGreaterThan(maxCost);
    // The message stays the same for every limit.
    expect(refusal!.message).not.toMatch(/\d/);
  });

  it('answers variables that do not fit the operation with BAD_USER_INPUT and 400, as over SSE', async () => {
    const query = 'query Node($id: ID!) { node(id: $id) { id } }';
    for (const accept of ['application/json', 'application/graphql-response+json']) {
      for (const variables of [{ id: 5.5 }, {}]) {
        const { status, body } = await post({ query, variables }, { accept });
        expect(status, accept).toBe(400);
        expect(body.errors?.map((error) => error.extensions?.code), JSON.stringify(body)).toEqual(['BAD_USER_INPUT']);
      }
    }
  });

  it('answers a body without a query with a code', async () => {
    const { body } = await post({});
    expect(body.errors?.map((error) => [error.message, error.extensions?.code])).toEqual([['Must provide query string.', 'BAD_REQUEST']]);
  });

  it('refuses a GET without Authorization or a CSRF header with 403 and a code of its own', async () => {
    const response = await fetch(`${server.url}/graphql?query=${encodeURIComponent('{ __typename }')}`);
    expect(response.status).toBe(403);
    const body = (await response.json()) as Body;
    expect(body.errors?.map((error) => error.extensions?.code)).toEqual(['CSRF_HEADER_MISSING']);
    expect(body.errors![0]!.message).toContain('x-graphql-yoga-csrf');
  });
});
