import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { generationChunks as chunkRows, generations } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { createEventBusOver } from '../src/events/bus.js';
import { generationChunks, generationUpdates } from '../src/generations/streams.js';
import { createTestDatabase, databaseKind, openTwoConnections, type TestDatabase } from './support/db.js';
import { within } from './support/generation-helpers.js';
import { as, createGeneration, createTeam, type Team } from './support/rls.js';

// STREAM_POLL_MS: a live stream whose events all went missing (a bus between processes that
// lost them) still gets every row and the end of the run, from the database, once its poll
// comes: after the configured wait (with ±25 % jitter), not before. The clock is faked, so
// "not before" is the stream's own deadline, never the machine's speed.

const POLL_MS = 1000;

describe(`a live stream on a bus that lost every event polls after STREAM_POLL_MS (${databaseKind})`, () => {
  let database: TestDatabase;
  let team: Team;
  // Not the memory bus (which never loses an event, so its streams poll only after a minute), and nothing is ever published on it.
  const deaf = createEventBusOver(new EventTarget());

  beforeAll(async () => {
    database = await createTestDatabase();
    team = await createTeam(database.db);
    await openTwoConnections(database);
  });
  afterAll(() => database?.close());
  // The streams' polls share one timer, armed by performance.now(): both are faked.
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] }));
  afterEach(() => void vi.useRealTimers());

  const worker = () => serviceScope(database.db);
  const succeedUnannounced = (id: string) =>
    worker().run((tx) => tx.update(generations).set({ status: 'SUCCEEDED', phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, id)));

  it('a chunk stream reads the chunks written since and the end of the run at its poll, and completes', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    await worker().run((tx) => tx.insert(chunkRows).values([0, 1].map((seq) => ({ generationId: id, seq, text: `c${seq}` }))));
    const stream = await generationChunks({ scope: as(database.db, team.owner), bus: deaf, generationId: id, pollMs: POLL_MS });
    try {
      const seen = [(await stream.next()).value!, (await stream.next()).value!];
      await worker().run((tx) => tx.insert(chunkRows).values([2, 3, 4].map((seq) => ({ generationId: id, seq, text: `c${seq}` }))));
      await succeedUnannounced(id);
      seen.push(...(await restAtPoll(stream)));
      expect(seen.map((chunk) => chunk.seq)).toEqual([0, 1, 2, 3, 4]);
    } finally {
      await stream.return(undefined);
    }
  });

  it('generationUpdated reads the final state at its poll and completes after it', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    const stream = await generationUpdates({ scope: as(database.db, team.owner), bus: deaf, generationId: id, pollMs: POLL_MS });
    try {
      expect((await stream.next()).value).toMatchObject({ status: 'RUNNING' });
      await succeedUnannounced(id);
      expect((await restAtPoll(stream)).map((row) => row.status)).toEqual(['SUCCEEDED']);
    } finally {
      await stream.return(undefined);
    }
  });
});

/**
 * What the stream yields until it completes, on the faked clock: nothing before its poll can
 * come (three quarters of STREAM_POLL_MS, its jitter's earliest), all of it once the poll is
 * due (a quarter more, its latest), read from the database then.
 */
async function restAtPoll<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const rest = settledState(drain(stream));
  await vi.advanceTimersByTimeAsync(POLL_MS * 0.74);
  expect(rest.settled, 'the stream polled before STREAM_POLL_MS').toBe(false);
  await vi.advanceTimersByTimeAsync(POLL_MS * 0.52);
  vi.useRealTimers(); // the poll is due: what is left is the stream's read
  return within(rest.promise, 10_000, () => 'the stream did not read the database by STREAM_POLL_MS and a quarter');
}

/** Everything the stream yields until it completes. */
async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

function settledState<T>(promise: Promise<T>): { promise: Promise<T>; settled: boolean } {
  const state = { promise, settled: false };
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}
