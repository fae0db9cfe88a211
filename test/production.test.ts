import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { getIntrospectionQuery } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ConfigError, parseConfig, weakSecret } from '../src/config.js';
import { ProjectsDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { type CapturedServer, startCapturedServer } from './support/log-capture.js';
import { startProcess } from './support/process.js';
import { type TestServer, startTestServer } from './support/server.js';

// Production mode: the schema stays private (no introspection, GraphiQL or "Did you
// mean" hints unless ALLOW_INTROSPECTION=true), unexpected errors say nothing but a
// request id, and an unsafe configuration never gets as far as listening.

const strongSecret = () => randomBytes(48).toString('base64');
const encryptionKey = () => randomBytes(32).toString('base64');
const production = () => ({ NODE_ENV: 'production', AUTH_JWT_SECRET: strongSecret(), KILN_ENCRYPTION_KEY: encryptionKey(), METRICS_TOKEN: strongSecret() });

type Result = { data?: Record<string, unknown> | null; errors?: { message: string; extensions?: Record<string, unknown> }[] };

function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('unsafe configurations are refused', () => {
  it('refuses a wildcard in CORS_ORIGINS, in any mode, because credentials are allowed', () => {
    expect(problemsOf({ CORS_ORIGINS: '*' })).toEqual([expect.stringMatching(/CORS_ORIGINS.*"\*"/)]);
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com, https://*.example.com' })).toHaveLength(1);
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com,http://localhost:5173' })).toEqual([]);
  });

  it('refuses local auth in production without AUTH_JWT_SECRET, and production without KILN_ENCRYPTION_KEY', () => {
    expect(problemsOf({ NODE_ENV: 'production', KILN_ENCRYPTION_KEY: encryptionKey(), METRICS_TOKEN: strongSecret() })).toEqual([expect.stringMatching(/AUTH_JWT_SECRET/)]);
    expect(problemsOf({ NODE_ENV: 'production', AUTH_JWT_SECRET: strongSecret(), METRICS_TOKEN: strongSecret() })).toEqual([expect.stringMatching(/KILN_ENCRYPTION_KEY/)]);
    expect(problemsOf(production())).toEqual([]);
    // Supabase signs its own tokens: no local secret needed.
    expect(problemsOf({ NODE_ENV: 'production', KILN_ENCRYPTION_KEY: encryptionKey(), METRICS_TOKEN: strongSecret(), AUTH_PROVIDER: 'supabase', SUPABASE_URL: 'https://x.supabase.co', SUPABASE_ANON_KEY: 'anon' })).toEqual([]);
    // Outside production the generated key and the generated signing key are fine.
    expect(problemsOf({})).toEqual([]);
  });

  it('refuses a weak AUTH_JWT_SECRET: short, few characters, or a repeated pattern', () => {
    for (const weak of ['short', 'x'.repeat(64), 'abcd'.repeat(10), 'password'.repeat(4), 'Summer2024!'.repeat(3), '0123456789'.repeat(4)]) {
      expect(weakSecret(weak), weak).toBe(true);
      expect(problemsOf({ AUTH_JWT_SECRET: weak }), weak).toEqual([expect.stringMatching(/AUTH_JWT_SECRET is too weak/)]);
    }
    for (const strong of [randomBytes(48).toString('base64'), randomBytes(32).toString('hex'), randomBytes(24).toString('base64url')]) {
      expect(weakSecret(strong), strong).toBe(false);
    }
  });

  it('lists every problem at once', () => {
    const problems = problemsOf({ NODE_ENV: 'production', CORS_ORIGINS: '*', AUTH_JWT_SECRET: 'changeme' });
    expect(problems).toEqual([
      expect.stringMatching(/AUTH_JWT_SECRET is too weak/),
      expect.stringMatching(/CORS_ORIGINS/),
      expect.stringMatching(/KILN_ENCRYPTION_KEY/),
      expect.stringMatching(/METRICS_TOKEN/),
    ]);
  });

  it('makes `npm start` exit 1 with the list and no stack trace', async () => {
    const { code, stderr } = await startProcess({ NODE_ENV: 'production', CORS_ORIGINS: '*' });
    expect(code).toBe(1);
    expect(stderr).toContain('Invalid configuration');
    expect(stderr).toMatch(/AUTH_JWT_SECRET/);
    expect(stderr).toMatch(/CORS_ORIGINS/);
    expect(stderr).toMatch(/KILN_ENCRYPTION_KEY/);
    expect(stderr).not.toMatch(/\n\s+at /);
  });
});

const hasSuggestion = (text: string) => /did you mean/i.test(text);

/** Misspelt operations that graphql-js answers with a hint: field, argument, enum literal and variable, type, input field. */
const misspelt: { query: string; variables?: Record<string, unknown> }[] = [
  { query: '{ viewr { id } }' },
  { query: '{ viewer { emial } }' },
  { query: '{ projects(frist: 1) { totalCount } }' },
  { query: 'mutation { createProject(input: { name: "x", target: WEBB }) { __typename } }' },
  { query: 'mutation M($t: ProjectTarget!) { createProject(input: { name: "x", target: $t }) { __typename } }', variables: { t: 'WEBB' } },
  { query: 'query Q($x: Projct) { viewer { id } }' },
  { query: 'mutation M($i: CreateProjectInput!) { createProject(input: $i) { __typename } }', variables: { i: { name: 'x', targt: 'WEB' } } },
];

describe(`a production server (${databaseKind})`, () => {
  let server: CapturedServer;
  let user: TestUser;
  let ws: Client;

  beforeAll(async () => {
    server = await startCapturedServer({ ...production(), LOG_LEVEL: 'info' });
    user = await signUp(server);
    ws = createClient({
      url: `${server.url.replace(/^http/, 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${user.accessToken}` },
      retryAttempts: 0,
    });
  });

  afterAll(async () => {
    await ws?.dispose();
    await server?.stop();
  });

  const post = async (body: unknown) => (await (await user.client.post(body)).json()) as Result;
  const overWs = (query: string, variables: Record<string, unknown> = {}) =>
    new Promise<Result>((resolve, reject) => {
      let last: Result = {};
      ws.subscribe({ query, variables }, {
        next: (value) => void (last = value as Result),
        error: (error) => (Array.isArray(error) ? resolve({ errors: error }) : reject(new Error(JSON.stringify(error)))),
        complete: () => resolve(last),
      });
    });

  it('warns at start that previews share the API\'s origin without PREVIEW_ORIGIN', () => {
    expect(server.logs.records().filter((r) => r.level === 40).map((r) => r.msg)).toContain(
      "previews are served from the API's own origin: set PREVIEW_ORIGIN to an origin of their own",
    );
  });

  it('refuses introspection, over HTTP and graphql-ws, and still answers __typename', async () => {
    for (const query of [getIntrospectionQuery(), '{ __type(name: "Project") { fields { name } } }', '{ __schema { types { name } } }']) {
      const response = await post({ query });
      expect(response.data ?? null).toBeNull();
      expect(response.errors?.[0]?.message).toMatch(/introspection has been disabled/);
      expect((await overWs(query)).errors?.[0]?.message).toMatch(/introspection has been disabled/);
    }
    expect(await post({ query: '{ __typename }' })).toEqual({ data: { __typename: 'Query' } });
  });

  it('serves no GraphiQL', async () => {
    const page = await fetch(`${server.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(await page.text()).not.toMatch(/graphiql|<html/i);
  });

  it('hints at no field, argument, type or enum value', async () => {
    for (const attempt of misspelt) {
      const response = await post(attempt);
      expect(response.errors?.length, JSON.stringify(attempt)).toBeGreaterThan(0);
      expect(hasSuggestion(JSON.stringify(response)), JSON.stringify(response)).toBe(false);
      expect(hasSuggestion(JSON.stringify(await overWs(attempt.query, attempt.variables))), attempt.query).toBe(false);
    }
  });

  it('masks an unexpected error: no inner message, stack or file path, only a request id that the log also has', async () => {
    await createProject(user.client);
    // Break the database under the server for a moment.
    await server.database.db.execute(sql`alter table project_members rename to project_members_gone`);
    let response: Result;
    let overSocket: Result;
    try {
      response = await post({ query: '{ projects(first: 5) { edges { node { id members { role } } } } }' });
      overSocket = await overWs('{ projects(first: 5) { edges { node { id members { role } } } } }');
    } finally {
      await server.database.db.execute(sql`alter table project_members_gone rename to project_members`);
    }
    for (const result of [response, overSocket]) {
      const text = JSON.stringify(result);
      expect(text).toContain('Unexpected error.');
      expect(text).not.toMatch(/project_members|relation|does not exist|stack|\.ts\b|\/work\/|node_modules|originalError/);
      const requestId = result.errors?.[0]?.extensions?.requestId;
      expect(requestId).toEqual(expect.any(String));
      // The operator finds the real cause under the same id.
      const logged = server.logs.records().find((r) => r.requestId === requestId && r.msg === 'unexpected error');
      expect(JSON.stringify(logged)).toMatch(/project_members/);
    }
    expect((await user.client.expectNoErrors(ProjectsDocument, {})).projects.totalCount).toBe(1);
  });
});

describe(`ALLOW_INTROSPECTION=true in production (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ ...production(), ALLOW_INTROSPECTION: 'true' });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('opens introspection, GraphiQL and hints again', async () => {
    const introspection = (await (await server.client().post({ query: getIntrospectionQuery() })).json()) as Result;
    expect(introspection.errors).toBeUndefined();
    expect(introspection.data?.__schema).toBeDefined();
    const page = await fetch(`${server.url}/graphql`, { headers: { accept: 'text/html' } });
    expect(await page.text()).toMatch(/graphiql/i);
    // Each misspelling the production test sends does get a hint when hints are on.
    const user = await signUp(server);
    for (const attempt of misspelt) expect(hasSuggestion(await (await user.client.post(attempt)).text()), attempt.query).toBe(true);
  });
});
