import { createClient } from '@supabase/supabase-js';
import { eq } from 'drizzle-orm';
import { print } from 'graphql';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { users } from '../src/db/schema.js';
import { CreateProjectDocument, ProjectsDocument, RefreshSessionDocument, ViewerDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { type FakeSupabase, startFakeSupabase } from './support/fake-supabase.js';
import { createProject, onlyError, signUp } from './support/fixtures.js';
import { startTestServer, type TestServer } from './support/server.js';

// Kiln's users sign in by email. An anonymous (or phone) sign-in on the same Supabase
// project needs nothing but the public anon key; its tokens are live GoTrue sessions
// without an email, and must be refused as no session, never half accepted.

describe(`Supabase users without an email (${databaseKind})`, () => {
  let supabase: FakeSupabase;
  let server: TestServer;

  beforeAll(async () => {
    supabase = await startFakeSupabase({ anonymousSignIns: true });
    server = await startTestServer(supabase.kilnEnv);
  });

  afterAll(async () => {
    await server?.stop();
    await supabase?.close();
  });

  async function anonymousSession() {
    const direct = createClient(supabase.url, supabase.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { data, error } = await direct.auth.signInAnonymously();
    expect(error).toBeNull();
    const session = data.session!;
    expect(decodeJwt(session.access_token)).toMatchObject({ role: 'authenticated', email: '', is_anonymous: true });
    return session;
  }

  it('answers an anonymous user’s query with UNAUTHENTICATED and mutations with AuthError, never a 500', async () => {
    const session = await anonymousSession();
    const client = server.client(session.access_token);

    const response = await client.post({ query: print(ProjectsDocument), variables: {} });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Parameters<typeof onlyError>[0];
    expect(body.data ?? null).toBeNull();
    expect(onlyError(body)).toMatchObject({ path: ['projects'], extensions: { code: 'UNAUTHENTICATED' } });

    expect(await client.expectNoErrors(ViewerDocument)).toEqual({ viewer: null });
    const { createProject: created } = await client.expectNoErrors(CreateProjectDocument, { input: { name: 'Anonymous', target: 'WEB' } });
    expect(created.__typename).toBe('AuthError');
    // Its refresh token gets no Kiln session either.
    const { refreshSession } = await server.client().expectNoErrors(RefreshSessionDocument, { refreshToken: session.refresh_token });
    expect(refreshSession.__typename).toBe('AuthError');
    expect(await server.database.db.$count(users, eq(users.id, session.user.id))).toBe(0);
  });

  it('leaves users who signed in by email alone', async () => {
    await anonymousSession();
    const user = await signUp(server);
    expect(await user.client.expectNoErrors(ViewerDocument)).toEqual({ viewer: { id: user.id, email: user.email } });
    expect((await createProject(user.client)).viewerRole).toBe('OWNER');
  });
});
