import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProjectsDocument, ViewerDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signIn, signUp, uniqueEmail } from './support/fixtures.js';
import { type FakeSupabase, startFakeSupabase } from './support/fake-supabase.js';
import { startTestServer, type TestServer } from './support/server.js';

// A Supabase user deleted (dashboard, admin API) and signed up again with the same
// email is a new account: it signs in, and sees nothing of the old one.

describe(`a Supabase user deleted and re-created with the same email (${databaseKind})`, () => {
  let supabase: FakeSupabase;
  let server: TestServer;

  beforeAll(async () => {
    supabase = await startFakeSupabase();
    server = await startTestServer(supabase.kilnEnv);
  });

  afterAll(async () => {
    await server?.stop();
    await supabase?.close();
  });

  it('signs up, signs in and works as a new account that inherits nothing', async () => {
    const email = uniqueEmail('recreated');
    const old = await signUp(server, email);
    await createProject(old.client, { name: 'Belongs to the deleted account' });
    supabase.deleteUser(email);

    const renewed = await signUp(server, email);
    expect(renewed.id).not.toBe(old.id);
    const again = await signIn(server, email);
    expect(await again.client.expectNoErrors(ViewerDocument)).toEqual({ viewer: { id: renewed.id, email } });
    const { projects } = await again.client.expectNoErrors(ProjectsDocument, {});
    expect(projects.edges).toEqual([]);
    // The new account is the one found by email.
    const project = await createProject(again.client);
    expect(project.viewerRole).toBe('OWNER');
  });
});
