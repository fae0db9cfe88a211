import { beforeAll, describe, expect, it } from 'vitest';
import {
  CancelGenerationDocument,
  GenerationChunksDocument,
  GenerationUpdatedDocument,
  RefreshSessionDocument,
  SignOutDocument,
  ViewerDocument,
} from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signIn, signUp, type TestUser } from './support/fixtures.js';
import { startAccepted, within } from './support/generation-helpers.js';
import { RawSocket, UpgradeRefused, collect, liveClient } from './support/live.js';
import { LogCapture } from './support/log-capture.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { useTestServer } from './support/server.js';
import { useGenerationServer } from './support/suite-server.js';

// graphql-ws as a browser client meets it: who may connect, how and when a socket is
// closed (4403 for auth, always with the generic reason), and failures that stay on
// one operation. Generations run slowly here (OFFLINE_CHUNK_DELAY_MS), and their builds
// hang, so that streams are still live while the connection is tested, however slowly
// the tests around them run.

const ALLOWED_ORIGIN = 'https://app.example.com';

describe(`graphql-ws connections (${databaseKind})`, () => {
  const suite = useGenerationServer(
    {
      OFFLINE_CHUNK_DELAY_MS: '400',
      WS_AUTH_RECHECK_MS: '300',
      WS_MAX_SUBSCRIPTIONS: '3',
      CORS_ORIGINS: ALLOWED_ORIGIN,
    },
    'hang',
  );
  let liveGeneration: string;

  beforeAll(async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    // Streams for a dozen seconds, then its build hangs: RUNNING, and its streams open, for the whole suite
    // (streamed to its end, it would complete the streams the tests below hold open). The server's stop ends it.
    liveGeneration = (await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A slow stream for the socket tests' })).id;
  });

  it('runs queries over the socket with the token of connectionParams, through the same context as HTTP', async () => {
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const viewer = collect(live.client, ViewerDocument, {});
      expect(await viewer.ended).toEqual({ errors: undefined });
      expect(viewer.items).toEqual([{ viewer: { id: suite.owner.id, email: suite.owner.email } }]);
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
    const forged = token === 'FORGED' ? `${suite.owner.accessToken.slice(0, -4)}AAAA` : token;
    const live = liveClient(suite.server.url, forged, { connectionParams });
    try {
      expect(await within(live.closed, 5000, () => 'the socket stayed open')).toEqual({ code: 4403, reason: 'Forbidden' });
    } finally {
      await live.dispose();
    }
  });

  it('refuses an upgrade from a browser origin that is not allowed, before any socket exists', async () => {
    await expect(RawSocket.open(suite.server.url, { origin: 'https://evil.example' })).rejects.toEqual(new UpgradeRefused(403));
    const allowed = await RawSocket.open(suite.server.url, { origin: ALLOWED_ORIGIN });
    allowed.close();
    // Not a browser (no Origin): allowed, the token decides.
    const native = await RawSocket.open(suite.server.url);
    try {
      await native.init(suite.owner.accessToken);
    } finally {
      native.close();
    }
  });

  it('a generation the user may not see fails that operation only (NOT_FOUND); the socket stays usable', async () => {
    const stranger = await signUp(suite.server);
    const live = liveClient(suite.server.url, stranger.accessToken);
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
    const refusedBefore = await refusalCounts(suite.server.url);
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const open = [0, 1, 2].map(() => collect(live.client, GenerationUpdatedDocument, { id: liveGeneration }));
      await Promise.all(open.map((s) => s.atLeast(1)));
      const extra = collect(live.client, GenerationUpdatedDocument, { id: liveGeneration });
      const outcome = await within(extra.ended, 5000, () => 'the fourth subscription was not refused');
      expect(outcome.errors).toEqual([
        expect.objectContaining({ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', limit: 3 } }),
      ]);
      expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ ws_max_subscriptions: 1 }));
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

  it('closes with 4403 when the session is signed out mid-stream', async () => {
    const session = await signIn(suite.server, suite.owner.email);
    const live = liveClient(suite.server.url, session.accessToken);
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: liveGeneration });
      await within(chunks.atLeast(1), 10_000, () => 'no chunk arrived');
      expect(await session.client.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
      expect(await within(live.closed, 5000, () => 'the socket outlived its session')).toEqual({ code: 4403, reason: 'Forbidden' });
      // Other sessions of the same user are untouched.
      const other = liveClient(suite.server.url, suite.owner.accessToken);
      await within(other.connected, 5000, () => 'the other session could not connect');
      await other.dispose();
    } finally {
      await live.dispose();
    }
  });
});

describe(`graphql-ws deadlines (${databaseKind})`, () => {
  // Short deadlines of their own, not the other suites': a process stalled past a deadline (the
  // server and its clients share one event loop) can miss a pong or a connection_init that came in time.
  const server = useTestServer({ WS_CONNECTION_INIT_TIMEOUT_MS: '1000', WS_KEEPALIVE_MS: '1000' });
  let owner: TestUser;

  beforeAll(async () => {
    owner = await signUp(server);
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
    // Each socket is initialised as soon as it is open: WS_CONNECTION_INIT_TIMEOUT_MS is for its own
    // round trip, not for another socket's token check as well.
    const deaf = await RawSocket.open(server.url, {}, { autoPong: false });
    const opened = [deaf];
    // The deaf one answers pings until it is acknowledged (its token check may outlast a ping interval), then no more.
    let deafened = false;
    deaf.socket.on('ping', () => deafened || deaf.socket.pong());
    try {
      await deaf.init(owner.accessToken);
      deafened = true;
      const answering = await RawSocket.open(server.url);
      opened.push(answering);
      await answering.init(owner.accessToken);
      // Terminated without a close frame: the peer is presumed gone.
      expect((await within(deaf.closed, 10_000, () => 'the deaf socket stayed open')).code).toBe(1006);
      // A client that answers stays, ping after ping.
      const threePings = new Promise<void>((resolve) => {
        let pings = 0;
        answering.socket.on('ping', () => ++pings === 3 && resolve());
      });
      await within(threePings, 10_000, () => 'the answering socket saw no three more pings');
      expect(answering.socket.readyState).toBe(answering.socket.OPEN);
    } finally {
      for (const socket of opened) socket.close();
    }
  });
});

describe(`graphql-ws when a query's context cannot be built (${databaseKind})`, () => {
  /** Set to fail the next read of one session (a query's token check) once, as a dropped database connection would. */
  let failSessionRead = false;
  /** Set to fail the next reads of one session with a connection error's code, as a failover refusing connections would. */
  let refuseSessionReads = 0;
  const logs = new LogCapture();
  const suite = useGenerationServer(
    // Only the query's token check reads a session here: the re-checks would wait a minute.
    // The build hangs, so the generation runs until the test cancels it.
    { WS_AUTH_RECHECK_MS: '60000', STREAM_ACCESS_RECHECK_MS: '60000', LOG_LEVEL: 'error' },
    'hang',
    {
      logTo: logs,
      onQuery: (query) => {
        if (failSessionRead && /from "auth_sessions" where \("auth_sessions"\."id" = /i.test(query)) {
          failSessionRead = false;
          throw new Error('connection terminated unexpectedly (injected by the test)');
        }
        if (refuseSessionReads > 0 && /from "auth_sessions" where \("auth_sessions"\."id" = /i.test(query)) {
          refuseSessionReads--;
          throw Object.assign(new Error('connect ECONNREFUSED (injected by the test)'), { code: 'ECONNREFUSED' });
        }
      },
    },
  );

  it('fails that query only, masked with a request id the log has; the subscription opened before goes on and the socket still answers', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A stream that outlives a failed query' });
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const updates = collect(live.client, GenerationUpdatedDocument, { id: generation.id });
      await within(updates.atLeast(1), 30_000, () => 'no update arrived');

      failSessionRead = true;
      const failed = collect(live.client, ViewerDocument, {});
      const outcome = await within(failed.ended, 10_000, () => 'the query did not end');
      expect(failSessionRead).toBe(false);
      expect(outcome.errors).toEqual([{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: expect.any(String) } }]);
      expect(JSON.stringify(outcome)).not.toContain('injected');
      const requestId = outcome.errors![0]!.extensions!.requestId;
      expect(logs.records().filter((record) => record.requestId === requestId && JSON.stringify(record).includes('injected'))).toHaveLength(1);

      // The stream opened before the failure still delivers on the same socket: the cancel that follows it.
      await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: generation.id });
      expect(await within(updates.ended, 30_000, () => 'the stream did not end with the cancel')).toEqual({ errors: undefined });
      expect(updates.items.at(-1)?.generationUpdated).toMatchObject({ status: 'CANCELLED' });
      // And a later query on it is answered.
      const viewer = collect(live.client, ViewerDocument, {});
      expect(await within(viewer.ended, 10_000, () => 'the later query did not end')).toEqual({ errors: undefined });
      expect(viewer.items).toEqual([{ viewer: { id: suite.owner.id, email: suite.owner.email } }]);
      // Had the socket closed, its close would have come before the answers above.
      expect(await Promise.race([live.closed, 'open'])).toBe('open');
    } finally {
      await live.dispose();
    }
  });

  it('waits out a session read refused as in a failover: a socket connecting then is accepted, a request then is answered', async () => {
    // Two refusals each: the token check tries again (db/outage.ts) until the read goes through.
    refuseSessionReads = 2;
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      expect(await within(Promise.race([live.connected.then(() => 'connected'), live.closed]), 10_000, () => 'the socket neither connected nor closed')).toBe(
        'connected',
      );
      expect(refuseSessionReads).toBe(0);
      const viewer = collect(live.client, ViewerDocument, {});
      expect(await within(viewer.ended, 10_000, () => 'the query did not end')).toEqual({ errors: undefined });
      expect(viewer.items).toEqual([{ viewer: { id: suite.owner.id, email: suite.owner.email } }]);
    } finally {
      await live.dispose();
    }

    refuseSessionReads = 2;
    const response = await suite.owner.client.request(ViewerDocument, {});
    expect(refuseSessionReads).toBe(0);
    expect(response).toEqual({ data: { viewer: { id: suite.owner.id, email: suite.owner.email } } });
  });
});

describe(`graphql-ws and token expiry (${databaseKind})`, () => {
  const suite = useGenerationServer({
    OFFLINE_CHUNK_DELAY_MS: '400',
    ACCESS_TOKEN_TTL_SECONDS: '2',
    // The re-check would also catch it; the timer at `exp` must do it first.
    WS_AUTH_RECHECK_MS: '60000',
  });

  it('closes with 4403 when the access token expires mid-stream', async () => {
    let user = await signUp(suite.server);
    // Tokens live two seconds: refresh before each step that needs one.
    const fresh = async () => {
      const { refreshSession } = await suite.server.client().expectNoErrors(RefreshSessionDocument, { refreshToken: user.refreshToken });
      if (refreshSession.__typename !== 'AuthSession') throw new Error(`refresh failed: ${refreshSession.__typename}`);
      user = { ...user, ...refreshSession, client: suite.server.client(refreshSession.accessToken) };
      return user;
    };
    const project = await createProject((await fresh()).client, { target: 'FLUTTER' });
    const generation = await startAccepted((await fresh()).client, { projectId: project.id, prompt: 'Stream past my token' });
    const { accessToken, expiresAt } = await fresh();
    const live = liveClient(suite.server.url, accessToken);
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: generation.id });
      const closed = await within(live.closed, 6000, () => 'the socket outlived its token');
      expect(closed).toEqual({ code: 4403, reason: 'Forbidden' });
      // Not before the token expired; the re-check (60 s) cannot have closed it within the bound above, so the timer at `exp` did.
      expect(Date.now()).toBeGreaterThanOrEqual(new Date(expiresAt).getTime() - 50);
      expect((await chunks.ended).error).toBeDefined();
    } finally {
      await live.dispose();
    }
  });
});
