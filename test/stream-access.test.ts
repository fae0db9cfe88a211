import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildLogLines, projects } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { InvalidStateError } from '../src/errors.js';
import { createMemoryEventBus } from '../src/events/bus.js';
import { createStreamAccess } from '../src/generations/stream-access.js';
import { generationStore } from '../src/generations/store.js';
import { buildLogs, generationUpdates } from '../src/generations/streams.js';
import { createLogger } from '../src/observability/logger.js';
import {
  AddProjectMemberDocument,
  ArchiveProjectDocument,
  CancelGenerationDocument,
  GenerationChunksDocument,
  GenerationDocument,
  GenerationUpdatedDocument,
  RemoveProjectMemberDocument,
  SignOutDocument,
} from './gql/graphql.js';
import { createTestDatabase, databaseKind, type TestDatabase } from './support/db.js';
import { createProject, signIn, signUp, type TestUser } from './support/fixtures.js';
import { releaseOneByOne, scriptHeldAnswer, untilText, useGeminiServer } from './support/gemini-server.js';
import { type GenerationServer, startAccepted, waitForEnd, within } from './support/generation-helpers.js';
import { startFakeSupabase } from './support/fake-supabase.js';
import { useStarted } from './support/lifecycle.js';
import { collect, liveClient, RawSocket, sseSubscribe } from './support/live.js';
import { as, createGeneration, createTeam } from './support/rls.js';

// Live streams end when access ends, over SSE and graphql-ws alike: sign-out, removal
// from the project, archiving it and token expiry each end a stream that is still live
// with a last typed error, then the stream completes. Generations are held mid-answer here
// (a fake Gemini whose answer waits behind a gate after its first piece) so that they are
// still running while access changes, however slow the machine is (token expiry has a
// clock of its own: see its case); the socket's own re-check is set far off so that what
// ends the stream is the stream's own check.

const recheck = { STREAM_ACCESS_RECHECK_MS: '200', WS_AUTH_RECHECK_MS: '600000' };

type Transport = 'sse' | 'graphql-ws';

/** A live generationUpdated stream of `generationId` for `user` over `transport`, with its ending. */
async function openStream(server: GenerationServer, transport: Transport, user: TestUser, generationId: string) {
  if (transport === 'sse') {
    const stream = sseSubscribe(server.url, user.accessToken, GenerationUpdatedDocument, { id: generationId });
    await within(stream.atLeast(1), 20_000, () => 'the SSE stream delivered nothing');
    return {
      ended: stream.ended.then((how) => ({ completed: how.completed, errors: how.errors })),
      last: () => stream.items.at(-1)?.generationUpdated,
      close: async () => stream.abort(),
    };
  }
  const live = liveClient(server.url, user.accessToken);
  const stream = collect(live.client, GenerationUpdatedDocument, { id: generationId });
  await within(stream.atLeast(1), 20_000, () => 'the graphql-ws stream delivered nothing');
  return {
    ended: stream.ended.then((how) => ({ completed: how.error === undefined, errors: how.errors })),
    last: () => stream.items.at(-1)?.generationUpdated,
    close: async () => {
      await live.dispose();
    },
  };
}

describe(`live streams end when access ends (${databaseKind})`, () => {
  const suite = useGeminiServer(recheck);
  const cleanups: (() => Promise<unknown>)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });

  /** An owner, a viewer of their project, and a generation held after the first piece of its answer. */
  async function sharedGeneration() {
    // Held after its first piece until the case lets it on or ends (the gate opens after the cleanups below, on a cancelled run).
    const { gate, pieces } = scriptHeldAnswer(suite.gemini, 'Shared', 6, 1);
    const owner = await signUp(suite.server);
    const viewer = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const added = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: viewer.email, role: 'VIEWER' } });
    if (added.addProjectMember.__typename !== 'ProjectMember') throw new Error(`addProjectMember: ${added.addProjectMember.__typename}`);
    const viewerId = added.addProjectMember.user.id;
    const generation = await startAccepted(owner.client, { projectId: project.id, prompt: 'A long stream to lose access in' });
    // A fresh session: the test may have signed the owner out everywhere.
    cleanups.push(async () => (await signIn(suite.server, owner.email)).client.request(CancelGenerationDocument, { id: generation.id }));
    // Running: its first piece has gone out and the rest waits for the gate.
    await within(gate.reached(1), 20_000, () => 'the generation never streamed');
    return { owner, viewer, viewerId, project, generation, gate, pieces };
  }

  it('a subscription started on a socket after its session signed out is refused as a query is, with no history', async () => {
    const { owner, generation } = await sharedGeneration();
    const session = await signIn(suite.server, owner.email);
    const socket = await RawSocket.open(suite.server.url);
    cleanups.push(async () => socket.close());
    await socket.init(session.accessToken);
    // The socket is live and the generation has history to replay.
    socket.subscribe('before', GenerationChunksDocument, { id: generation.id });
    await within(socket.waitFor((m) => m.id === 'before' && m.type === 'next'), 20_000, () => 'the first subscription got nothing');

    expect(await session.client.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
    socket.subscribe('after', GenerationChunksDocument, { id: generation.id });
    socket.subscribe('query', GenerationDocument, { id: generation.id });
    /** The errors of an operation once it has ended, and whether any of its results carried data. */
    const outcome = async (id: string) => {
      await within(socket.waitFor((m) => m.id === id && (m.type === 'complete' || m.type === 'error')), 20_000, () => `${id} did not end`);
      const messages = socket.messages.filter((m) => m.id === id);
      const payloads = messages.map((m) => m.payload as { data?: Record<string, unknown> | null; errors?: unknown[] } | unknown[] | undefined);
      const errors = payloads.flatMap((p) => (Array.isArray(p) ? p : (p?.errors ?? [])));
      const data = payloads.some((p) => !Array.isArray(p) && Object.values(p?.data ?? {}).some((value) => value !== null));
      return { errors, data };
    };
    const [subscription, query] = [await outcome('after'), await outcome('query')];
    expect(query).toEqual({ errors: [expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })], data: false });
    const message = (query.errors[0] as { message: string }).message;
    expect(subscription).toEqual({ errors: [expect.objectContaining({ message, extensions: { code: 'UNAUTHENTICATED' } })], data: false });
    // The socket stays open for the client to sign in again (its re-check closes it in time).
    expect(socket.socket.readyState).toBe(socket.socket.OPEN);
  });

  describe.each<Transport>(['sse', 'graphql-ws'])('over %s', (transport) => {
    it('signing out ends the stream with UNAUTHENTICATED, then it completes', async () => {
      const { owner, generation } = await sharedGeneration();
      const session = await signIn(suite.server, owner.email);
      const stream = await openStream(suite.server, transport, session, generation.id);
      cleanups.push(stream.close);
      expect(await session.client.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
      const ended = await within(stream.ended, 20_000, () => 'the stream outlived its session');
      expect(ended).toEqual({ completed: true, errors: [expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })] });
    });

    it('signing out everywhere from another session ends it too', async () => {
      const { owner, generation } = await sharedGeneration();
      const stream = await openStream(suite.server, transport, owner, generation.id);
      cleanups.push(stream.close);
      const other = await signIn(suite.server, owner.email);
      expect(await other.client.expectNoErrors(SignOutDocument, { scope: 'GLOBAL' })).toEqual({ signOut: true });
      const ended = await within(stream.ended, 20_000, () => 'the stream outlived a global sign-out');
      expect(ended.errors).toEqual([expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })]);
    });

    it('a viewer removed from the project stops getting the stream (NOT_FOUND); the owner keeps it', async () => {
      const { owner, viewer, viewerId, project, generation, gate, pieces } = await sharedGeneration();
      const watching = await openStream(suite.server, transport, viewer, generation.id);
      cleanups.push(watching.close);
      const ownerStream = sseSubscribe(suite.server.url, owner.accessToken, GenerationChunksDocument, { id: generation.id });
      cleanups.push(async () => ownerStream.abort());
      await within(untilText(ownerStream, pieces[0]!), 20_000, () => "the owner's stream delivered nothing");
      const removed = await owner.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: project.id, userId: viewerId } });
      expect(removed.removeProjectMember.__typename).toBe('Project');
      const ended = await within(watching.ended, 20_000, () => 'the removed viewer kept the stream');
      expect(ended).toEqual({ completed: true, errors: [expect.objectContaining({ message: 'Generation not found.', extensions: { code: 'NOT_FOUND' } })] });
      // The owner's stream is untouched: more chunks keep coming, a piece at a time, each seen before the next goes out.
      await within(releaseOneByOne(gate, pieces.slice(1, 3), ownerStream), 20_000, () => "the owner's stream stopped too");
      expect(ownerStream.events.some((event) => event.event === 'complete')).toBe(false);
    });

    it('archiving the project stops its generation and ends its live streams: CANCELLED, or INVALID_STATE if access went first', async () => {
      const { owner, project, generation } = await sharedGeneration();
      const stream = await openStream(suite.server, transport, owner, generation.id);
      cleanups.push(stream.close);
      const archived = await owner.client.expectNoErrors(ArchiveProjectDocument, { id: project.id });
      expect(archived.archiveProject.__typename).toBe('Project');
      const ended = await within(stream.ended, 20_000, () => 'the stream outlived the archiving');
      if (ended.errors) expect(ended.errors).toEqual([expect.objectContaining({ extensions: { code: 'INVALID_STATE' } })]);
      else expect(stream.last()).toMatchObject({ status: 'CANCELLED' });
      expect(await waitForEnd(suite.server, owner.client, owner.accessToken, generation.id)).toMatchObject({ status: 'CANCELLED' });
    });
  });
});

describe(`live streams and token expiry (${databaseKind})`, () => {
  // Unlike the held generation, this case runs against a clock: tokens live
  // ACCESS_TOKEN_TTL_SECONDS, the owner's through creating the project and starting the
  // generation, the fresh one through subscribing and the first chunk. The case waits out the
  // expiry, so a longer life only makes it slower: 5 s leaves room on a busy machine, but a
  // machine slower still could see the token expire before the stream had its first chunk.
  const suite = useGeminiServer({ ...recheck, ACCESS_TOKEN_TTL_SECONDS: '5', STREAM_ACCESS_RECHECK_MS: '600000' });

  it('an SSE stream ends with UNAUTHENTICATED when its token expires', async () => {
    const { gate } = scriptHeldAnswer(suite.gemini, 'Token expiry', 6, 1);
    const owner = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(owner.client, { projectId: project.id, prompt: 'Stream past my token' });
    // The first piece is out and the rest held: the stream has a chunk at once and stays live past the expiry.
    await within(gate.reached(1), 20_000, () => 'the generation never streamed');
    const fresh = await signIn(suite.server, owner.email);
    const stream = sseSubscribe(suite.server.url, fresh.accessToken, GenerationChunksDocument, { id: generation.id });
    try {
      const ended = await within(stream.ended, 20_000, () => 'the stream outlived its token');
      expect(ended).toEqual({ completed: true, errors: [expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })] });
      expect(stream.items.length, 'the stream was not live before the expiry').toBeGreaterThan(0);
    } finally {
      stream.abort();
      const renewed = await signIn(suite.server, owner.email);
      await renewed.client.request(CancelGenerationDocument, { id: generation.id });
    }
  });
});

describe(`live streams per user (${databaseKind})`, () => {
  const suite = useGeminiServer({ ...recheck, LIVE_STREAMS_PER_USER: '2' });

  it('refuses a stream or socket beyond LIVE_STREAMS_PER_USER with a clear error, and takes one again once room is made', async () => {
    const { gate } = scriptHeldAnswer(suite.gemini, 'Many viewers', 6, 1);
    const owner = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(owner.client, { projectId: project.id, prompt: 'Many viewers of one user' });
    const socket = await RawSocket.open(suite.server.url);
    const sse = sseSubscribe(suite.server.url, owner.accessToken, GenerationUpdatedDocument, { id: generation.id });
    try {
      // Held after its first piece: the first stream stays live, and counted, throughout.
      await within(gate.reached(1), 20_000, () => 'the generation never streamed');
      await socket.init(owner.accessToken);
      await within(sse.atLeast(1), 20_000, () => 'the first SSE stream delivered nothing');

      // A third over SSE: refused on its own stream.
      const refused = sseSubscribe(suite.server.url, owner.accessToken, GenerationUpdatedDocument, { id: generation.id });
      const outcome = await within(refused.ended, 20_000, () => 'the third stream was not refused');
      expect(outcome.errors).toEqual([expect.objectContaining({ extensions: { code: 'TOO_MANY_STREAMS', per: 'user', limit: 2 } })]);
      expect(outcome.errors![0]!.message).toContain('at most 2');
      // A third as a socket: closed at connection_init.
      const extra = await RawSocket.open(suite.server.url);
      extra.send({ type: 'connection_init', payload: { authorization: `Bearer ${owner.accessToken}` } });
      expect(await within(extra.closed, 20_000, () => 'the third socket stayed open')).toEqual({ code: 4429, reason: 'Too many open connections' });
      // Another user is not affected.
      const other = await signUp(suite.server);
      const theirs = await RawSocket.open(suite.server.url);
      await theirs.init(other.accessToken);
      theirs.close();

      // Closing one makes room.
      sse.abort();
      await sse.ended.catch(() => {});
      // The server lets the stream go as soon as it sees the request end; until then the cap still counts it.
      await within(
        (async () => {
          for (;;) {
            const attempt = sseSubscribe(suite.server.url, owner.accessToken, GenerationUpdatedDocument, { id: generation.id });
            const first = await Promise.race([attempt.atLeast(1).then(() => 'ok' as const), attempt.ended.then(() => 'refused' as const)]);
            attempt.abort();
            if (first === 'ok') return;
          }
        })(),
        20_000,
        () => 'no room was made',
      );
    } finally {
      socket.close();
      sse.abort();
      await owner.client.request(CancelGenerationDocument, { id: generation.id });
    }
  });
});

describe(`live streams on Supabase Auth (${databaseKind})`, () => {
  const supabase = useStarted(() => startFakeSupabase(), (fake) => fake.close());
  const suite = useGeminiServer(() => ({ ...recheck, ...supabase.kilnEnv }));

  it('signing out ends an SSE stream with UNAUTHENTICATED', async () => {
    const { gate } = scriptHeldAnswer(suite.gemini, 'Supabase sign-out', 6, 1);
    const owner = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(owner.client, { projectId: project.id, prompt: 'Streamed past a Supabase sign-out' });
    await within(gate.reached(1), 20_000, () => 'the generation never streamed');
    const session = await signIn(suite.server, owner.email);
    const stream = await openStream(suite.server, 'sse', session, generation.id);
    try {
      expect(await session.client.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
      const ended = await within(stream.ended, 20_000, () => 'the stream outlived its Supabase session');
      expect(ended).toEqual({ completed: true, errors: [expect.objectContaining({ extensions: { code: 'UNAUTHENTICATED' } })] });
    } finally {
      await stream.close();
      await owner.client.request(CancelGenerationDocument, { id: generation.id });
    }
  });
});

describe(`an archived project's history stays readable (${databaseKind})`, () => {
  let database: TestDatabase;
  beforeAll(async () => void (database = await createTestDatabase()));
  afterAll(() => database?.close());

  it('replaying a finished generation goes on to its end through the re-check that ends a running one with INVALID_STATE', async () => {
    const team = await createTeam(database.db); // its generation finished, with a line of build log
    const worker = serviceScope(database.db);
    await worker.run((tx) => tx.insert(buildLogLines).values([1, 2, 3, 4].map((seq) => ({ generationId: team.generationId, seq, step: 'build', stream: 'STDOUT' as const, text: `line ${seq}` }))));
    const stillRunning = await createGeneration(database.db, team, 'RUNNING');
    await worker.run((tx) => tx.update(projects).set({ archivedAt: new Date() }).where(eq(projects.id, team.projectId)));
    const access = createStreamAccess({
      stillValid: async (tokens) => new Set(tokens),
      accessOf: (userIds, generationIds) => worker.run((tx) => generationStore.accessOf(tx, userIds, generationIds)),
      intervalMs: 20,
      maxPerUser: 100,
      maxPerAddress: 100,
      logger: createLogger('silent'),
    });
    const bus = createMemoryEventBus();
    const viewer = { id: team.owner, accessToken: 'a token', address: '127.0.0.1' };
    const scope = as(database.db, team.owner);
    const replay = await access.watch(viewer, team.generationId, () => buildLogs({ scope, bus, generationId: team.generationId }));
    try {
      // A slow client: it holds its first line while the re-check runs.
      const first = await replay.next();
      const live = await access.watch(viewer, stillRunning, () => generationUpdates({ scope, bus, generationId: stillRunning }));
      expect((await live.next()).value).toMatchObject({ status: 'RUNNING' });
      // The re-check that ends the live stream has looked at the replay too (it was watched first).
      await expect(live.next()).rejects.toBeInstanceOf(InvalidStateError);
      const rest = [];
      for await (const line of replay) rest.push(line);
      expect([first.value, ...rest].map((line) => line.seq)).toEqual([0, 1, 2, 3, 4]);
    } finally {
      await replay.return(undefined);
      access.close();
    }
  });
});
