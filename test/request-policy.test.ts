import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseKind } from './support/db.js';
import { PASSWORD, signIn, signUp, uniqueEmail } from './support/fixtures.js';
import { startTestServer, type TestServer } from './support/server.js';

// Cross-site requests cannot run operations: a browser sends a form or text/plain POST,
// or a bare GET, to another origin without a preflight, so POSTs are JSON only and a
// GET must carry a header only a preflighted request can (Authorization, or a CSRF
// header). GraphiQL's page, JSON clients and signed-in GETs (SSE included) work as before.

const signUpMutation = `mutation($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { __typename } }`;

describe(`requests a browser would send cross-site without asking (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  const post = (contentType: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': contentType, ...headers }, body });

  it.each([
    ['text/plain', (q: string, v: object) => JSON.stringify({ query: q, variables: v })],
    ['text/plain;charset=UTF-8', (q: string, v: object) => JSON.stringify({ query: q, variables: v })],
    ['application/x-www-form-urlencoded', (q: string, v: object) => new URLSearchParams({ query: q, variables: JSON.stringify(v) }).toString()],
    ['multipart/form-data; boundary=x', (q: string, v: object) => `--x\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${JSON.stringify({ query: q, variables: v })}\r\n--x--\r\n`],
    ['application/graphql', (q: string) => q.replace('$email', '"x"')],
  ])('refuses a POST of %s with 415 and runs nothing', async (contentType, body) => {
    const email = uniqueEmail('csrf');
    const response = await post(contentType, body(signUpMutation, { email, password: PASSWORD }), { origin: 'https://evil.example' });
    expect(response.status).toBe(415);
    expect(await response.json()).toMatchObject({ errors: [expect.objectContaining({ extensions: expect.objectContaining({ code: 'UNSUPPORTED_MEDIA_TYPE' }) })] });
    // The account was never created.
    await expect(signIn(server, email)).rejects.toThrow(/AuthError/);
  });

  it('runs JSON POSTs, as application/json or application/graphql-response+json', async () => {
    for (const contentType of ['application/json', 'application/json; charset=utf-8', 'application/graphql-response+json']) {
      const email = uniqueEmail('json');
      const response = await post(contentType, JSON.stringify({ query: signUpMutation, variables: { email, password: PASSWORD } }));
      expect(response.status, contentType).toBe(200);
      expect(await response.json(), contentType).toEqual({ data: { signUp: { __typename: 'AuthSession' } } });
    }
    expect((await post('application/graphql-response+json', '[{"query":"{ __typename }"}]')).status).toBe(400);
  });

  it("answers a body that is no JSON object with 400 and a message of its own, never the parser's", async () => {
    for (const contentType of ['application/json', 'application/graphql-response+json']) {
      for (const [body, message] of [
        ['{"query":', 'The request body is not valid JSON.'],
        ['[{"query":"{ __typename }"}]', 'The request body must be one JSON object.'],
      ]) {
        const response = await post(contentType, body!);
        expect(response.status, `${contentType} ${body}`).toBe(400);
        expect(await response.json(), `${contentType} ${body}`).toEqual({ errors: [{ message, extensions: { code: 'BAD_REQUEST' } }] });
      }
    }
  });

  it("answers a GET whose variables or extensions are no JSON with 400 and a message of its own, never the parser's or the variables", async () => {
    const query = encodeURIComponent('query($p: Boolean!) { __typename @include(if: $p) }');
    for (const [params, message] of [
      [`variables=${encodeURIComponent(`{"p":'hunter2-secret'}`)}`, 'The variables parameter is not valid JSON.'],
      ['extensions=nope', 'The extensions parameter is not valid JSON.'],
    ]) {
      for (const accept of ['application/json', 'text/event-stream']) {
        const response = await fetch(`${server.url}/graphql?query=${query}&${params}`, { headers: { 'x-graphql-yoga-csrf': '1', accept } });
        expect(response.status, `${params} ${accept}`).toBe(400);
        // Over SSE, the error is the stream's one result.
        const text = await response.text();
        const result = accept === 'text/event-stream' ? /^data: (\{.*)$/m.exec(text)?.[1] : text;
        expect(JSON.parse(result ?? 'null'), `${params} ${accept}`).toEqual({ errors: [{ message, extensions: { code: 'BAD_REQUEST' } }] });
      }
    }
    const fine = await fetch(`${server.url}/graphql?query=${query}&variables=${encodeURIComponent('{"p":true}')}&extensions=`, { headers: { 'x-graphql-yoga-csrf': '1' } });
    expect(await fine.json()).toEqual({ data: { __typename: 'Query' } });
  });

  it('sends every answer of the API origin unsniffable, unframable and without a referrer', async () => {
    const answers = {
      result: await post('application/json', JSON.stringify({ query: '{ __typename }' })),
      error: await post('application/json', '{'),
      health: await fetch(`${server.url}/health`),
      ready: await fetch(`${server.url}/ready`),
      missingFile: await fetch(`${server.url}/missing.js`),
    };
    expect(answers.missingFile.status).toBe(404);
    for (const [name, response] of Object.entries(answers)) {
      const headers = ['x-content-type-options', 'x-frame-options', 'referrer-policy'].map((header) => response.headers.get(header));
      expect(headers, name).toEqual(['nosniff', 'DENY', 'no-referrer']);
    }
  });

  it('runs a GET query only with a header no simple request carries', async () => {
    const url = `${server.url}/graphql?query=${encodeURIComponent('{ viewer { email } }')}`;
    const bare = await fetch(url);
    expect(bare.status).toBe(403);
    const user = await signUp(server);
    const signedIn = await fetch(url, { headers: { authorization: `Bearer ${user.accessToken}` } });
    expect(await signedIn.json()).toEqual({ data: { viewer: { email: user.email } } });
    const anonymous = await fetch(`${server.url}/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { 'x-graphql-yoga-csrf': '1' } });
    expect(await anonymous.json()).toEqual({ data: { __typename: 'Query' } });
    // A mutation never runs over GET.
    const mutation = await fetch(`${server.url}/graphql?query=${encodeURIComponent('mutation { signOut }')}`, {
      headers: { authorization: `Bearer ${user.accessToken}` },
    });
    expect(mutation.status).toBe(405);
  });

  it('still serves GraphiQL to a browser', async () => {
    const page = await fetch(`${server.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  });
});
