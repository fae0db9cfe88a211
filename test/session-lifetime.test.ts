import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RefreshSessionDocument, ViewerDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { signIn, signUp } from './support/fixtures.js';
import { within } from './support/generation-helpers.js';
import { liveClient } from './support/live.js';
import { startTestServer, type TestServer } from './support/server.js';

// SESSION_MAX_AGE_SECONDS: a local session ends that long after sign-in however often
// it is refreshed. Access tokens never outlive their session, so the end is an event a
// client sees: its socket closes with 4403 when the last token expires, and the refresh
// token is refused from then on.

describe(`local sessions have an absolute lifetime (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ SESSION_MAX_AGE_SECONDS: '8', ACCESS_TOKEN_TTL_SECONDS: '3600' });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('refreshing does not extend a session past SESSION_MAX_AGE_SECONDS', async () => {
    const before = Date.now();
    const user = await signUp(server);
    // A one-hour token is cut to the session's end.
    expect(new Date(user.expiresAt).getTime()).toBeLessThanOrEqual(before + 9000);

    const { refreshSession } = await server.client().expectNoErrors(RefreshSessionDocument, { refreshToken: user.refreshToken });
    if (refreshSession.__typename !== 'AuthSession') throw new Error(`refresh failed: ${refreshSession.__typename}`);
    expect(refreshSession.expiresAt, 'the refreshed token outlives the first').toBe(user.expiresAt);
    expect(await server.client(refreshSession.accessToken).expectNoErrors(ViewerDocument)).toEqual({ viewer: { id: user.id, email: user.email } });

    // The session's end: the last token's socket is closed as it expires.
    const live = liveClient(server.url, refreshSession.accessToken);
    try {
      expect(await within(live.closed, 30_000, () => 'the socket outlived the session')).toEqual({ code: 4403, reason: 'Forbidden' });
    } finally {
      await live.dispose();
    }
    const { refreshSession: late } = await server.client().expectNoErrors(RefreshSessionDocument, { refreshToken: refreshSession.refreshToken });
    expect(late.__typename).toBe('AuthError');
    expect((await server.client(refreshSession.accessToken).request(ViewerDocument)).data?.viewer ?? null).toBeNull();

    // Signing in again starts a new session.
    const again = await signIn(server, user.email);
    expect(await again.client.expectNoErrors(ViewerDocument)).toEqual({ viewer: { id: user.id, email: user.email } });
  });
});
