import { decodeGlobalID } from '@pothos/plugin-relay';
import { inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSessionLiveness } from '../src/auth/session-liveness.js';
import { users } from '../src/db/schema.js';
import { AddProjectMemberDocument, ViewerDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind, type TestDatabase } from './support/db.js';
import { type FakeSupabase, startFakeSupabase } from './support/fake-supabase.js';
import { createProject, ProjectByIdDocument, signIn, signUp, uniqueEmail } from './support/fixtures.js';
import { startTestServer, type TestServer } from './support/server.js';

// An access token keeps the email it was issued with until it expires (an hour), also after
// the user changed their email at Supabase and someone else took the old one. The users
// directory (whom an owner adds by email) must follow GoTrue's users, never a token's claims,
// on every instance, including one that has not seen the user yet.

describe(`a Supabase email handed on to another user (${databaseKind})`, () => {
  let supabase: FakeSupabase;
  let database: TestDatabase;
  /** Two instances on one database, as behind a load balancer (or one instance and its restart). */
  let first: TestServer;
  let second: TestServer;

  beforeAll(async () => {
    supabase = await startFakeSupabase();
    database = await createTestDatabase();
    first = await startTestServer(supabase.kilnEnv, { database });
    second = await startTestServer(supabase.kilnEnv, { database });
  });

  afterAll(async () => {
    await second?.stop();
    await first?.stop();
    await database?.close();
    await supabase?.close();
  });

  /** The users rows of these users (by their Viewer ids), as `{ id: email }`. */
  async function directory(...ids: string[]) {
    const byRowId = new Map(ids.map((id) => [decodeGlobalID(id).id, id]));
    const rows = await database.db.select({ id: users.id, email: users.email }).from(users).where(inArray(users.id, [...byRowId.keys()]));
    return Object.fromEntries(rows.map((row) => [byRowId.get(row.id), row.email]));
  }

  it('keeps the address with its new holder when the old holder’s earlier token reaches an instance that has not seen them', async () => {
    const shared = uniqueEmail('design-team');
    const previous = await signUp(first, shared);
    const moved = uniqueEmail('moved');
    supabase.changeEmail(shared, moved);
    const current = await signUp(first, shared);
    expect(await directory(previous.id, current.id)).toEqual({ [previous.id]: expect.not.stringContaining(shared), [current.id]: shared });

    // The token from before the change still carries the old address, and its session is live;
    // the viewer it shows has the address GoTrue has now, not the one someone else holds.
    const viewer = await second.client(previous.accessToken).expectNoErrors(ViewerDocument);
    expect(viewer.viewer).toEqual({ id: previous.id, email: moved });

    // An owner who invites the address adds its holder now.
    const owner = await signUp(second);
    const project = await createProject(owner.client);
    const { addProjectMember: invited } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: shared, role: 'EDITOR' },
    });
    expect(invited).toMatchObject({ __typename: 'ProjectMember', role: 'EDITOR', user: { id: current.id, email: shared } });
    expect((await current.client.expectNoErrors(ProjectByIdDocument, { id: project.id })).project?.viewerRole).toBe('EDITOR');
    expect((await second.client(previous.accessToken).expectNoErrors(ProjectByIdDocument, { id: project.id })).project).toBeNull();

    // The directory took GoTrue's answer: the old holder is found under their new address.
    expect(await directory(previous.id, current.id)).toEqual({ [previous.id]: moved, [current.id]: shared });

    const { addProjectMember: found } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: moved, role: 'VIEWER' },
    });
    expect(found).toMatchObject({ __typename: 'ProjectMember', role: 'VIEWER', user: { id: previous.id, email: moved } });
    expect((await second.client(previous.accessToken).expectNoErrors(ProjectByIdDocument, { id: project.id })).project?.viewerRole).toBe('VIEWER');
    // Both old tokens go on working on both instances, and the rows stay as they are.
    for (const server of [first, second]) {
      expect((await server.client(previous.accessToken).expectNoErrors(ViewerDocument)).viewer).toEqual({ id: previous.id, email: moved });
      expect((await server.client(current.accessToken).expectNoErrors(ViewerDocument)).viewer).toEqual({ id: current.id, email: shared });
    }
    expect(await directory(previous.id, current.id)).toEqual({ [previous.id]: moved, [current.id]: shared });
  });

  it('adds a member by an address GoTrue took that a stricter email check would refuse', async () => {
    // GoTrue accepts `&` and `!` in an address (an email change, an admin, another app's sign-up).
    const given = uniqueEmail('pat');
    const member = await signUp(first, given);
    const unusual = uniqueEmail('pat&sam!');
    supabase.changeEmail(given, unusual);
    const signedIn = await signIn(first, unusual);
    expect((await signedIn.client.expectNoErrors(ViewerDocument)).viewer?.email).toBe(unusual);

    const owner = await signUp(second);
    const project = await createProject(owner.client);
    const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: ` ${unusual.toUpperCase()} `, role: 'VIEWER' },
    });
    expect(addProjectMember).toMatchObject({ __typename: 'ProjectMember', role: 'VIEWER', user: { id: member.id, email: unusual } });
    // What is no address at all is still refused, as a field error.
    for (const email of ['no-at-sign.example.com', 'two@at@example.com', 'a b@example.com', '@example.com', 'pat@']) {
      const { addProjectMember: refused } = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email, role: 'VIEWER' } });
      expect(refused.__typename, email).toBe('ValidationError');
    }
  });
});

// The provider writes a profile from GoTrue's answer to a session check, so a user it has not
// written (never seen, or forgotten to stay within its bounds) must get a fresh answer.
describe('session checks asked again', () => {
  /** The authority's next answer, given when the test says. */
  const nextAnswer = () => {
    let resolve: (live: boolean) => void = () => {};
    const promise = new Promise<boolean>((settle) => (resolve = settle));
    return { promise, resolve };
  };

  it('asks despite a remembered live answer, joins a question on its way, and still refuses an ended session at once', async () => {
    const asked: string[] = [];
    let answer = nextAnswer();
    const liveness = createSessionLiveness({
      ttlMs: 60_000,
      now: Date.now,
      ask: (token) => {
        asked.push(token);
        return answer.promise;
      },
    });
    const session = (id: string) => ({ sessionId: id, userId: 'user', expiresAtMs: Date.now() + 60_000, accessToken: `token-${id}` });

    const first = liveness.isLive(session('a'));
    answer.resolve(true);
    expect(await first).toBe(true);
    expect(await liveness.isLive(session('a'))).toBe(true);
    expect(asked).toEqual(['token-a']);

    answer = nextAnswer();
    const again = [liveness.isLive(session('a'), { askAgain: true }), liveness.isLive(session('a'), { askAgain: true })];
    answer.resolve(true);
    expect(await Promise.all(again)).toEqual([true, true]);
    expect(asked).toEqual(['token-a', 'token-a']);

    liveness.ended('a', 'user', Date.now() + 60_000);
    expect(await liveness.isLive(session('a'), { askAgain: true })).toBe(false);
    expect(asked).toHaveLength(2);
  });

  it("does not join a question asked before the user signed out everywhere: a request after the sign-out waits for GoTrue's new answer", async () => {
    const answers = [nextAnswer(), nextAnswer()];
    const liveness = createSessionLiveness({ ttlMs: 60_000, now: Date.now, ask: () => answers.shift()!.promise });
    const [before, after] = answers;
    const session = { sessionId: 'other-device', userId: 'user', expiresAtMs: Date.now() + 60_000, accessToken: 'token' };

    const inFlight = liveness.isLive(session);
    liveness.forgetUser('user'); // signOut(scope: GLOBAL) returned
    const sentAfter = liveness.isLive(session);
    before!.resolve(true);
    after!.resolve(false);
    expect(await inFlight).toBe(true);
    expect(await sentAfter).toBe(false);
    expect(await liveness.isLive(session)).toBe(false);
  });
});
