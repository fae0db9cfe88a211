import { afterEach, describe, expect, it } from 'vitest';
import { AddProjectMemberDocument, CancelGenerationDocument, GenerationChunksDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { type GenerationServer, startAccepted, within } from './support/generation-helpers.js';
import { type RawMessage, RawSocket, sseSubscribe } from './support/live.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { useGenerationServer } from './support/suite-server.js';

// What one user, and one client address across its users, may hold open at once: sockets,
// SSE streams and every subscription running on a socket count alike (LIVE_STREAMS_PER_USER,
// LIVE_STREAMS_PER_ADDRESS). A subscription beyond a cap fails on its own with
// TOO_MANY_STREAMS and the socket goes on; completing one gives its slot back. Every test
// client is on 127.0.0.1, one address. Generations stream slowly here so that they are
// still running while the streams are counted.

const slow = { OFFLINE_CHUNK_DELAY_MS: '400' };

/** A generation of `owner`'s that streams for a minute, with `viewers` added to its project; cancelled after the test. */
async function longGeneration(cleanups: (() => Promise<unknown>)[], owner: TestUser, viewers: TestUser[] = []) {
  const project = await createProject(owner.client, { target: 'FLUTTER' });
  for (const viewer of viewers) {
    const added = await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: viewer.email, role: 'VIEWER' } });
    expect(added.addProjectMember.__typename).toBe('ProjectMember');
  }
  const generation = await startAccepted(owner.client, { projectId: project.id, prompt: 'A long stream to count streams in' });
  cleanups.push(() => owner.client.request(CancelGenerationDocument, { id: generation.id }));
  return generation;
}

/** A socket of `user`'s past connection_init; closed after the test. */
async function socketOf(server: GenerationServer, cleanups: (() => Promise<unknown>)[], user: TestUser) {
  const socket = await RawSocket.open(server.url);
  cleanups.push(async () => socket.close());
  await socket.init(user.accessToken);
  return socket;
}

const results = (socket: RawSocket, id: string) => socket.messages.filter((m) => m.id === id && m.type === 'next');

/** Resolves once operation `id` has had `count` results with data. */
const streamed = (socket: RawSocket, id: string, count = 1) =>
  within(
    socket.waitFor(() => results(socket, id).filter((m) => (m.payload as { data?: unknown }).data).length >= count),
    20_000,
    () => `${id} got fewer than ${count} results: ${JSON.stringify(socket.messages.filter((m) => m.id === id))}`,
  );

/** The messages of operation `id` once it has ended (complete or error). */
async function outcomeOf(socket: RawSocket, id: string): Promise<RawMessage[]> {
  await within(socket.waitFor((m) => m.id === id && (m.type === 'complete' || m.type === 'error')), 20_000, () => `${id} did not end`);
  return socket.messages.filter((m) => m.id === id);
}

/** Resolves once the server has handled what `socket` sent so far: it answers a ping after those messages. */
async function handled(socket: RawSocket) {
  const pongs = () => socket.messages.filter((m) => m.type === 'pong').length;
  const before = pongs();
  socket.send({ type: 'ping' });
  await within(socket.waitFor(() => pongs() > before), 20_000, () => 'no pong');
}

/** TOO_MANY_STREAMS of the user's or the address's cap: the message and the extensions say which, and how many. */
const tooManyStreams = (per: 'user' | 'address', limit: number) =>
  expect.objectContaining({
    message: expect.stringContaining(per === 'user' ? `for this user (at most ${limit}` : `from this address (at most ${limit}`),
    extensions: { code: 'TOO_MANY_STREAMS', per, limit },
  });

/** Expects operation `id` refused as over SSE: one result, with this error and no data, then complete. */
async function expectRefused(socket: RawSocket, id: string, per: 'user' | 'address', limit: number) {
  const messages = await outcomeOf(socket, id);
  expect(messages.map((m) => m.type)).toEqual(['next', 'complete']);
  const { data, errors } = messages[0]!.payload as { data?: unknown; errors?: unknown[] };
  expect({ data: data ?? null, errors }).toEqual({ data: null, errors: [tooManyStreams(per, limit)] });
}

/**
 * A socket of `user`'s with subscriptions `ids` streaming chunks of `generationId`, once the
 * server has let go of a socket the user closed: until it has seen it close, the caps still
 * count that socket and its subscriptions, so an attempt refused meanwhile is closed and made again.
 */
async function streamingOnceRoom(server: GenerationServer, cleanups: (() => Promise<unknown>)[], user: TestUser, generationId: string, ids: string[]) {
  let gaveUp = false;
  const attempts = (async () => {
    while (!gaveUp) {
      const socket = await RawSocket.open(server.url);
      cleanups.push(async () => socket.close());
      socket.send({ type: 'connection_init', payload: { authorization: `Bearer ${user.accessToken}` } });
      const how = await Promise.race([socket.waitFor((m) => m.type === 'connection_ack').then(() => 'ack' as const), socket.closed.then(() => 'closed' as const)]);
      if (how === 'closed') {
        expect(await socket.closed).toEqual({ code: 4429, reason: 'Too many open connections' });
        continue;
      }
      for (const id of ids) socket.subscribe(id, GenerationChunksDocument, { id: generationId });
      const firsts = await Promise.all(ids.map((id) => socket.waitFor((m) => m.id === id)));
      if (firsts.every((m) => m.type === 'next' && (m.payload as { data?: unknown }).data)) return socket;
      socket.close();
    }
    throw new Error('gave up');
  })();
  try {
    return await within(attempts, 20_000, () => 'the closed socket kept its slots');
  } finally {
    gaveUp = true;
  }
}

/** Subscriptions 'first' and 'second' streaming on `socket`, and 'third' refused: the socket and two take a cap of 3. */
async function fillToCap(socket: RawSocket, chunks: { id: string }) {
  socket.subscribe('first', GenerationChunksDocument, chunks);
  socket.subscribe('second', GenerationChunksDocument, chunks);
  await streamed(socket, 'first');
  await streamed(socket, 'second');
  socket.subscribe('third', GenerationChunksDocument, chunks);
  await expectRefused(socket, 'third', 'user', 3);
}

describe(`graphql-ws subscriptions count against LIVE_STREAMS_PER_USER (${databaseKind})`, () => {
  const suite = useGenerationServer({ ...slow, LIVE_STREAMS_PER_USER: '3' });
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });

  it('refuses the subscription beyond the cap on its own, keeps the socket and the others streaming, and takes one again once another completes', async () => {
    const refusedBefore = await refusalCounts(suite.server.url);
    const owner = await signUp(suite.server);
    const other = await signUp(suite.server);
    const generation = await longGeneration(cleanups, owner, [other]);
    const socket = await socketOf(suite.server, cleanups, owner);
    const chunks = { id: generation.id };
    // The socket and two subscriptions: the third is one too many.
    await fillToCap(socket, chunks);
    expect(socket.socket.readyState).toBe(socket.socket.OPEN);
    // The first two go on.
    const [first, second] = [results(socket, 'first').length, results(socket, 'second').length];
    await streamed(socket, 'first', first + 2);
    await streamed(socket, 'second', second + 2);
    expect(socket.messages.filter((m) => (m.id === 'first' || m.id === 'second') && m.type !== 'next')).toEqual([]);

    // Completing one gives its slot back, and only its own: one more runs, the next is refused again.
    socket.send({ type: 'complete', id: 'first' });
    socket.subscribe('again', GenerationChunksDocument, chunks);
    await streamed(socket, 'again');
    socket.subscribe('fourth', GenerationChunksDocument, chunks);
    await expectRefused(socket, 'fourth', 'user', 3);
    expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ live_streams_per_user: 2 }));

    // Another user (on the same address) has slots of their own.
    const theirs = await socketOf(suite.server, cleanups, other);
    theirs.subscribe('one', GenerationChunksDocument, chunks);
    theirs.subscribe('two', GenerationChunksDocument, chunks);
    await streamed(theirs, 'one');
    await streamed(theirs, 'two');
  });

  it('gives back the slots of all its subscriptions when a socket closes', async () => {
    const owner = await signUp(suite.server);
    const generation = await longGeneration(cleanups, owner);
    const chunks = { id: generation.id };
    const socket = await socketOf(suite.server, cleanups, owner);
    await fillToCap(socket, chunks);
    socket.close();
    await socket.closed;

    // The socket and both its subscriptions are let go: a new socket runs two again, and no more.
    const replacement = await streamingOnceRoom(suite.server, cleanups, owner, generation.id, ['first', 'second']);
    replacement.subscribe('third', GenerationChunksDocument, chunks);
    await expectRefused(replacement, 'third', 'user', 3);
  });

  it('gives back the slot of a subscription whose socket closes while it is still opening', async () => {
    const owner = await signUp(suite.server);
    const generation = await longGeneration(cleanups, owner);
    const chunks = { id: generation.id };
    // Each socket closes right after its subscribe, before (or while) the stream opens.
    for (let i = 0; i < 10; i++) {
      const socket = await socketOf(suite.server, cleanups, owner);
      socket.subscribe('opening', GenerationChunksDocument, chunks);
      socket.close();
      await socket.closed;
    }
    // None of them kept a slot: a new socket runs two subscriptions, and no more.
    const replacement = await streamingOnceRoom(suite.server, cleanups, owner, generation.id, ['first', 'second']);
    replacement.subscribe('third', GenerationChunksDocument, chunks);
    await expectRefused(replacement, 'third', 'user', 3);
  });
});

describe(`LIVE_STREAMS_PER_ADDRESS counts every user of one address (${databaseKind})`, () => {
  const suite = useGenerationServer({ ...slow, LIVE_STREAMS_PER_ADDRESS: '4' });
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });

  it('refuses a subscription, an SSE stream and a socket beyond it, whoever asks from the address, saying which limit', async () => {
    const refusedBefore = await refusalCounts(suite.server.url);
    const [owner, second, third] = [await signUp(suite.server), await signUp(suite.server), await signUp(suite.server)];
    const generation = await longGeneration(cleanups, owner, [second, third]);
    const chunks = { id: generation.id };
    // Two users, a socket and a subscription each: the address's four slots.
    const ownerSocket = await socketOf(suite.server, cleanups, owner);
    ownerSocket.subscribe('mine', GenerationChunksDocument, chunks);
    await streamed(ownerSocket, 'mine');
    const secondSocket = await socketOf(suite.server, cleanups, second);
    secondSocket.subscribe('theirs', GenerationChunksDocument, chunks);
    await streamed(secondSocket, 'theirs');

    // Each user is far below LIVE_STREAMS_PER_USER (200), and still refused.
    secondSocket.subscribe('more', GenerationChunksDocument, chunks);
    await expectRefused(secondSocket, 'more', 'address', 4);
    expect(secondSocket.socket.readyState).toBe(secondSocket.socket.OPEN);
    const sse = sseSubscribe(suite.server.url, third.accessToken, GenerationChunksDocument, chunks);
    cleanups.push(async () => sse.abort());
    const sseOutcome = await within(sse.ended, 20_000, () => 'the SSE stream was not refused');
    expect(sseOutcome).toEqual({ completed: true, errors: [tooManyStreams('address', 4)] });
    const extra = await RawSocket.open(suite.server.url);
    cleanups.push(async () => extra.close());
    extra.send({ type: 'connection_init', payload: { authorization: `Bearer ${third.accessToken}` } });
    expect(await within(extra.closed, 20_000, () => 'the socket beyond the cap stayed open')).toEqual({ code: 4429, reason: 'Too many open connections from this address' });
    // A subscription, an SSE stream and a socket: operators see each turned away, and by which cap.
    expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ live_streams_per_address: 3 }));

    // One user's complete makes room for another's.
    ownerSocket.send({ type: 'complete', id: 'mine' });
    await handled(ownerSocket);
    secondSocket.subscribe('now', GenerationChunksDocument, chunks);
    await streamed(secondSocket, 'now');
  });
});
