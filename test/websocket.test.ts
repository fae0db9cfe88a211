import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GenerationChunksDocument,
  GenerationUpdatedDocument,
  RefreshSessionDocument,
  SignOutDocument,
  ViewerDocument,
} from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signIn, signUp, type TestUser } from './support/fixtures.js';
import { type FakeFlutter, fakeFlutter, startAccepted, startGenerationServer, type GenerationServer, within } from './support/generation-helpers.js';
import { RawSocket, UpgradeRefused, collect, liveClient } from './support/live.js';

// graphql-ws as a browser client meets it: who may connect, how and when a socket is
// closed (4403 for auth, always with the generic reason), and failures that stay on
// one operation. Generations run slowly here (OFFLINE_CHUNK_DELAY_MS) so that streams
// are still live while the connection is tested.

const ALLOWED_ORIGIN = 'https://app.example.com';

describe(`graphql-ws connections (${databaseKind})`, () => {
  let flutter: FakeFlutter;
  let server: GenerationServer;
  let owner: TestUser;
  let liveGeneration: string;

  beforeAll(async () => {
    flutter = await fakeFlutter('ok');
    server = await startGenerationServer({
      FLUTTER_BIN: flutter.bin,
      OFFLINE_CHUNK_DELAY_MS: '400',
      WS_AUTH_RECHECK_MS: '300',
      WS_MAX_SUBSCRIPTIONS: '3',
      WS_CONNECTION_INIT_TIMEOUT_MS: '300',
      CORS_ORIGINS: ALLOWED_ORIGIN,
      WS_KEEPALIVE_MS: '300',
    });
    owner = await signUp(server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    // Streams for a minute or so: live for the whole suite.
    liveGeneration = (await startAccepted(owner.client, { projectId: project.id, prompt: 'A slow stream for the socket tests' })).id;
  });

  afterAll(async () => {
    await server?.stop();
    await flutter?.remove();
  });

  it('runs queries over the socket with the token of connectionParams, through the same context as HTTP', async () => {
    const live = liveClient(server.url, owner.accessToken);
    try {
      const viewer = collect(live.client, ViewerDocument, {});
      expect(await viewer.ended).toEqual({ errors: undefined });
      expect(viewer.items).toEqual([{ viewer: { id: owner.id, email: owner.email } }]);
    } finally {
      await live.dispose();
    }
  });

  it.each([
    ['no connectionParams', undefined, undefined],
    ['no authorization', undefined, {}],
    ['a bad token', 'not-a-jwt', undefined],
    ['a token with a forged signature', 'FORGED', undefined],
  ])('closes with 4403 Forbidden for %s', async (_label, token, connectionParams) => {
    const forged = token === 'FORGED' ? `${owner.accessToken.slice(0, -4)}AAAA` : token;
    const live = liveClient(server.url, forged, { connectionParams });
    try {
      expect(await within(live.closed, 5000, () => 'the socket stayed open')).toEqual({ code: 4403, reason: 'Forbidden' });
    } finally {
      await live.dispose();
    }
  });

  it('closes with 4408 when no connection_init comes in time', async () => {
    const raw = await RawSocket.open(server.url);
    try {
      expect(await within(raw.closed, 5000, () => 'the socket stayed open')).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
    } finally {
      raw.close();
    }
  });

  it('drops a peer that stops answering pings', async () => {
    const deaf = await RawSocket.open(server.url, {}, { autoPong: false });
    const answering = await RawSocket.open(server.url);
    try {
      await deaf.init(owner.accessToken);
      await answering.init(owner.accessToken);
      // Terminated without a close frame: the peer is presumed gone.
      expect((await within(deaf.closed, 5000, () => 'the deaf socket stayed open')).code).toBe(1006);
      // A client that answers stays (it has seen several pings by now).
      expect(answering.socket.readyState).toBe(answering.socket.OPEN);
    } finally {
      deaf.close();
      answering.close();
    }
  });

  it('refuses an upgrade from a browser origin that is not allowed, before any socket exists', async () => {
    await expect(RawSocket.open(server.url, { origin: 'https://evil.example' })).rejects.toEqual(new UpgradeRefused(403));
    const allowed = await RawSocket.open(server.url, { origin: ALLOWED_ORIGIN });
    allowed.close();
    // Not a browser (no Origin): allowed, the token decides.
    const native = await RawSocket.open(server.url);
    try {
      await native.init(owner.accessToken);
    } finally {
      native.close();
    }
  });

  it('a generation the user may not see fails that operation only (NOT_FOUND); the socket stays usable', async () => {
    const stranger = await signUp(server);
    const live = liveClient(server.url, stranger.accessToken);
    try {
      const denied = collect(live.client, GenerationChunksDocument, { id: liveGeneration });
      const outcome = await within(denied.ended, 10_000, () => 'the subscription did not end');
      expect(denied.items).toEqual([]);
      expect(outcome.errors).toEqual([expect.objectContaining({ message: 'Generation not found.', extensions: { code: 'NOT_FOUND' } })]);
      // A malformed id is not found either, not an internal error.
      const malformed = collect(live.client, GenerationUpdatedDocument, { id: 'nope' });
      expect((await malformed.ended).errors).toEqual([expect.objectContaining({ extensions: { code: 'NOT_FOUND' } })]);
      // Same socket, still open and working.
      const viewer = collect(live.client, ViewerDocument, {});
      await viewer.ended;
      expect(viewer.items).toEqual([{ viewer: { id: stranger.id, email: stranger.email } }]);
    } finally {
      await live.dispose();
    }
  });

  it('refuses one operation beyond WS_MAX_SUBSCRIPTIONS with TOO_MANY_SUBSCRIPTIONS and keeps the socket', async () => {
    const live = liveClient(server.url, owner.accessToken);
    try {
      const open = [0, 1, 2].map(() => collect(live.client, GenerationUpdatedDocument, { id: liveGeneration }));
      await Promise.all(open.map((s) => s.atLeast(1)));
      const extra = collect(live.client, GenerationUpdatedDocument, { id: liveGeneration });
      const outcome = await within(extra.ended, 5000, () => 'the fourth subscription was not refused');
      expect(outcome.errors).toEqual([
        expect.objectContaining({ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', limit: 3 } }),
      ]);
      // Completing one makes room again on the same socket.
      open[0]!.stop();
      const again = collect(live.client, GenerationUpdatedDocument, { id: liveGeneration });
      await within(again.atLeast(1), 5000, () => 'the subscription after making room got nothing');
      again.stop();
      for (const s of open) s.stop();
    } finally {
      await live.dispose();
    }
  });

  it('closes with 4403 within seconds when the session is signed out mid-stream', async () => {
    const session = await signIn(server, owner.email);
    const live = liveClient(server.url, session.accessToken);
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: liveGeneration });
      await within(chunks.atLeast(1), 10_000, () => 'no chunk arrived');
      const signedOutAt = Date.now();
      expect(await session.client.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
      expect(await within(live.closed, 5000, () => 'the socket outlived its session')).toEqual({ code: 4403, reason: 'Forbidden' });
      expect(Date.now() - signedOutAt).toBeLessThan(3000);
      // Other sessions of the same user are untouched.
      const other = liveClient(server.url, owner.accessToken);
      await within(other.connected, 5000, () => 'the other session could not connect');
      await other.dispose();
    } finally {
      await live.dispose();
    }
  });
});

describe(`graphql-ws and token expiry (${databaseKind})`, () => {
  let flutter: FakeFlutter;
  let server: GenerationServer;

  beforeAll(async () => {
    flutter = await fakeFlutter('ok');
    server = await startGenerationServer({
      FLUTTER_BIN: flutter.bin,
      OFFLINE_CHUNK_DELAY_MS: '400',
      ACCESS_TOKEN_TTL_SECONDS: '2',
      // The re-check would also catch it; the timer at `exp` must do it first.
      WS_AUTH_RECHECK_MS: '60000',
    });
  });

  afterAll(async () => {
    await server?.stop();
    await flutter?.remove();
  });

  it('closes with 4403 when the access token expires mid-stream', async () => {
    let user = await signUp(server);
    // Tokens live two seconds: refresh before each step that needs one.
    const fresh = async () => {
      const { refreshSession } = await server.client().expectNoErrors(RefreshSessionDocument, { refreshToken: user.refreshToken });
      if (refreshSession.__typename !== 'AuthSession') throw new Error(`refresh failed: ${refreshSession.__typename}`);
      user = { ...user, ...refreshSession, client: server.client(refreshSession.accessToken) };
      return user;
    };
    const project = await createProject((await fresh()).client, { target: 'FLUTTER' });
    const generation = await startAccepted((await fresh()).client, { projectId: project.id, prompt: 'Stream past my token' });
    const { accessToken, expiresAt } = await fresh();
    const live = liveClient(server.url, accessToken);
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: generation.id });
      const closed = await within(live.closed, 6000, () => 'the socket outlived its token');
      expect(closed).toEqual({ code: 4403, reason: 'Forbidden' });
      const late = Date.now() - new Date(expiresAt).getTime();
      expect(late).toBeGreaterThanOrEqual(-50);
      expect(late).toBeLessThan(1500);
      expect((await chunks.ended).error).toBeDefined();
    } finally {
      await live.dispose();
    }
  });
});
