import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { eq } from 'drizzle-orm';
import { parse } from 'graphql';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildLogLines, generationChunks as chunkRows, generations } from '../src/db/schema.js';
import { type Scope, serviceScope } from '../src/db/scope.js';
import { createMemoryEventBus, type StatusEvent } from '../src/events/bus.js';
import type { GenerationPhase } from '../src/generations/status.js';
import { buildLogs, generationChunks, generationUpdates } from '../src/generations/streams.js';
import { BuildLogsDocument, GenerationChunksDocument, GenerationUpdatedDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind, openTwoConnections, type TestDatabase } from './support/db.js';
import { as, createGeneration, createTeam, type Team } from './support/rls.js';
import { releaseOneByOne, scriptHeldAnswer, useGeminiServer } from './support/gemini-server.js';
import { getGeneration, startInNewProject, waitForEnd, within } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { collect, isContiguousFromZero, liveClient } from './support/live.js';

// The resumable streams over graphql-ws: replay, live, resume after a disconnect,
// completion, and many subscribers of one generation.

describe(`generation streams over graphql-ws, replayed (${databaseKind})`, () => {
  // The offline model, slowed: Kiln writes the model's text every 50 ms, and the replay below
  // needs an answer of several chunks (at the test server's 0 ms it can come as one).
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '25' });

  it('replays a generation that finished long ago in full, then completes (chunks and build log)', async () => {
    const generation = await startInNewProject(suite.owner, 'A recipe box');
    const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
    expect(done.status).toBe('SUCCEEDED');
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: generation.id });
      const logs = collect(live.client, BuildLogsDocument, { id: generation.id });
      expect(await within(chunks.ended, 10_000, () => 'the chunk replay did not complete')).toEqual({ errors: undefined });
      expect(await within(logs.ended, 10_000, () => 'the log replay did not complete')).toEqual({ errors: undefined });
      const seqs = chunks.items.map((item) => item.generationChunks.seq);
      expect(seqs.length).toBeGreaterThan(1);
      expect(isContiguousFromZero(seqs)).toBe(true);
      expect(chunks.items.map((item) => item.generationChunks.text).join('')).toBe(done.output);
      const lines = logs.items.map((item) => item.buildLogs);
      expect(lines.length).toBeGreaterThan(0);
      expect(isContiguousFromZero(lines.map((line) => line.seq))).toBe(true);
      // The query's tail agrees with the stream.
      expect(lines.slice(-done.buildLog.length)).toEqual(done.buildLog);
      // After the last seq there is nothing, and that completes at once too.
      const rest = collect(live.client, GenerationChunksDocument, { id: generation.id, afterSeq: seqs.at(-1)! });
      expect(await within(rest.ended, 10_000, () => 'an empty replay did not complete')).toEqual({ errors: undefined });
      expect(rest.items).toEqual([]);
    } finally {
      await live.dispose();
    }
  });
});

describe(`generation streams over graphql-ws, live (${databaseKind})`, () => {
  // The model's answer waits at a gate: each case lets it on once its subscribers are where the
  // case needs them (mid-stream, or in before the run ends), however slow the machine. The 100
  // sockets of one user below, a subscription each, hold 200 live streams: LIVE_STREAMS_PER_USER's
  // default, no room to spare.
  const suite = useGeminiServer({ LIVE_STREAMS_PER_USER: '300' });

  const start = (prompt: string) => startInNewProject(suite.owner, prompt);

  it('resumes after a disconnect mid-stream: both parts together are every seq once, in order', async () => {
    const prompt = 'A habit tracker with streaks, reminders and a weekly chart';
    const { gate, pieces } = scriptHeldAnswer(suite.gemini, prompt, 8);
    const generation = await start(prompt);
    const first = liveClient(suite.server.url, suite.owner.accessToken);
    const before = collect(first.client, GenerationChunksDocument, { id: generation.id });
    try {
      await within(releaseOneByOne(gate, pieces.slice(0, 3), before), 20_000, () => `only ${before.items.length} chunks arrived`);
    } finally {
      await first.dispose(); // the connection drops mid-stream: the rest of the answer is still held
    }
    const seen = before.items.map((item) => item.generationChunks);
    const last = seen.at(-1)!.seq;

    const second = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const after = collect(second.client, GenerationChunksDocument, { id: generation.id, afterSeq: last });
      // Back in while the answer still streams: one more piece live, then the rest.
      await within(releaseOneByOne(gate, pieces.slice(3, 4), after), 20_000, () => 'the resumed stream got nothing');
      gate.open();
      expect(await within(after.ended, 30_000, () => 'the resumed stream did not complete')).toEqual({ errors: undefined });
      const resumed = after.items.map((item) => item.generationChunks);
      expect(resumed.length, 'the disconnect was not mid-stream').toBeGreaterThan(0);
      expect(resumed[0]!.seq).toBe(last + 1);
      const all = [...seen, ...resumed];
      expect(isContiguousFromZero(all.map((chunk) => chunk.seq))).toBe(true);
      const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
      expect(all.map((chunk) => chunk.text).join('')).toBe(done.output);
    } finally {
      await second.dispose();
    }
  });

  it('generationUpdated emits the current state first and completes after the terminal state', async () => {
    const prompt = 'A pomodoro timer';
    const { gate } = scriptHeldAnswer(suite.gemini, prompt, 4);
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const generation = await start(prompt);
      const updates = collect(live.client, GenerationUpdatedDocument, { id: generation.id });
      // The answer waits until the first state is in, so that state is one before the end.
      await within(updates.atLeast(1), 10_000, () => 'generationUpdated emitted nothing');
      gate.open();
      expect(await within(updates.ended, 30_000, () => 'generationUpdated did not complete')).toEqual({ errors: undefined });
      const states = updates.items.map((item) => item.generationUpdated);
      expect(['QUEUED', 'RUNNING']).toContain(states[0]!.status);
      expect(states.at(-1)).toMatchObject({ status: 'SUCCEEDED', phase: 'DONE' });
      expect(states.slice(0, -1).every((state) => state.status === 'QUEUED' || state.status === 'RUNNING')).toBe(true);
      // Each emission is a change.
      const keys = states.map((state) => `${state.status}/${state.phase}`);
      expect(new Set(keys).size).toBe(keys.length);

      // Once finished: the current (final) state alone, then complete.
      const again = collect(live.client, GenerationUpdatedDocument, { id: generation.id });
      expect(await within(again.ended, 10_000, () => 'generationUpdated of a finished generation did not complete')).toEqual({ errors: undefined });
      expect(again.items.map((item) => item.generationUpdated)).toEqual([states.at(-1)]);
    } finally {
      await live.dispose();
    }
  });

  it('generationUpdated answers fields read from other tables afresh at each state: the build steps and preview of the final one', async () => {
    const prompt = 'A recipe box';
    const { gate } = scriptHeldAnswer(suite.gemini, prompt, 4);
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const generation = await start(prompt);
      const updates = collect(live.client, GenerationUpdatedWithOutputsDocument, { id: generation.id });
      // Subscribed before the build: its first state is read before any build step or preview exists.
      await within(updates.atLeast(1), 10_000, () => 'generationUpdated emitted nothing');
      expect(updates.items[0]!.generationUpdated.status).not.toBe('SUCCEEDED');
      gate.open();
      expect(await within(updates.ended, 30_000, () => 'generationUpdated did not complete')).toEqual({ errors: undefined });
      const final = updates.items.at(-1)!.generationUpdated;
      expect(final.status).toBe('SUCCEEDED');
      const done = await getGeneration(suite.owner.client, generation.id);
      expect(done.buildSteps.length).toBeGreaterThan(0);
      expect(final.buildSteps).toEqual(done.buildSteps.map(({ name, status }) => ({ name, status })));
      expect(final.preview?.url).toMatch(/^http/);
    } finally {
      await live.dispose();
    }
  });

  it('gives 100 concurrent subscribers of one generation the identical sequence', async () => {
    const prompt = 'A shared shopping list for a family';
    const { gate } = scriptHeldAnswer(suite.gemini, prompt, 6);
    const clients = Array.from({ length: 100 }, () => liveClient(suite.server.url, suite.owner.accessToken));
    try {
      const generation = await start(prompt);
      const streams = clients.map(({ client }) => collect(client, GenerationChunksDocument, { id: generation.id }));
      // The first piece alone, until every subscriber has it: all 100 are in mid-stream, and get the rest live.
      gate.release();
      await within(Promise.all(streams.map((s) => s.atLeast(1))), 60_000, () => 'not every subscriber got the first chunk');
      gate.open();
      const outcomes = await within(Promise.all(streams.map((s) => s.ended)), 60_000, () => 'not every subscriber completed');
      expect(outcomes.every((outcome) => outcome.errors === undefined && outcome.error === undefined)).toBe(true);
      const done = await getGeneration(suite.owner.client, generation.id);
      const expected = streams[0]!.items;
      expect(isContiguousFromZero(expected.map((item) => item.generationChunks.seq))).toBe(true);
      expect(expected.map((item) => item.generationChunks.text).join('')).toBe(done.output);
      for (const stream of streams) expect(stream.items).toEqual(expected);
    } finally {
      await Promise.all(clients.map((c) => c.dispose()));
    }
  });
});

// The same streams against the bus and the database directly, in the order the pipeline
// works: rows written, then published; a state written, then published. The bus here
// delivers what a test publishes, when it publishes it, so a run can end just after a gap
// and a viewer can join while the pipeline moves on.

describe(`generation streams between the bus and the database (${databaseKind})`, () => {
  let database: TestDatabase;
  let team: Team;
  const bus = createMemoryEventBus();

  beforeAll(async () => {
    database = await createTestDatabase();
    team = await createTeam(database.db);
    await openTwoConnections(database);
  });
  afterAll(() => database?.close());
  // A quiet stream's poll of the database (a minute on this bus) never comes: only events move these streams.
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
  afterEach(() => void vi.useRealTimers());

  const worker = () => serviceScope(database.db);
  const writeChunks = (id: string, seqs: number[]) => worker().run((tx) => tx.insert(chunkRows).values(seqs.map((seq) => ({ generationId: id, ...chunk(seq) }))));
  const writeLines = (id: string, seqs: number[]) => worker().run((tx) => tx.insert(buildLogLines).values(seqs.map((seq) => ({ generationId: id, ...line(seq) }))));
  const writePhase = (id: string, phase: GenerationPhase) => worker().run((tx) => tx.update(generations).set({ phase }).where(eq(generations.id, id)));
  /** The run ends: written, then published, as the pipeline does. */
  const succeed = async (id: string) => {
    await worker().run((tx) => tx.update(generations).set({ status: 'SUCCEEDED', phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, id)));
    bus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
  };
  const running = (phase: GenerationPhase): StatusEvent => ({ status: 'RUNNING', phase });

  it('a chunk stream whose last live batch comes after a gap reads the gap back and completes at the end of the run', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    await writeChunks(id, [0, 1, 2]);
    const stream = await generationChunks({ scope: as(database.db, team.owner), bus, generationId: id });
    try {
      const seen = await take(stream, 3);
      // The run writes 3..8 and ends; this stream gets 6..8 and the end together, 3..5 never (a bus lost them).
      await writeChunks(id, range(3, 8));
      bus.publish('generationChunks', id, range(6, 8).map(chunk));
      await succeed(id);
      seen.push(...(await untilComplete(stream)));
      expect(seen.map((item) => item.seq)).toEqual(range(0, 8));
    } finally {
      await stream.return(undefined);
    }
  });

  it('a build-log stream whose inbox overflows just before the end of the run reads the rest back and completes', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    await writeLines(id, range(0, 9));
    const stream = await buildLogs({ scope: as(database.db, team.owner), bus, generationId: id });
    try {
      const seen = await take(stream, 10);
      // Waiting for the next line, the stream gets 1200 at once (more than its inbox holds, so the oldest go), then the end.
      const rest = untilComplete(stream);
      await writeLines(id, range(10, 1209));
      await worker().run((tx) => tx.update(generations).set({ status: 'SUCCEEDED', phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, id)));
      for (let from = 10; from < 1210; from += 300) bus.publish('buildLogs', id, range(from, from + 299).map(line));
      bus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
      seen.push(...(await rest));
      expect(seen.map((item) => item.seq)).toEqual(range(0, 1209));
    } finally {
      await stream.return(undefined);
    }
  });

  it('generationUpdated does not step back to a phase that its first read had already passed', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    // The viewer's first read waits for a busy database; meanwhile the pipeline moves to
    // WRITING (written, published) and on to BUILDING (written; published later).
    const scope = aroundFirstRead(as(database.db, team.owner), 'before', async () => {
      await writePhase(id, 'WRITING');
      bus.publish('generationUpdated', id, running('WRITING'));
      await writePhase(id, 'BUILDING');
    });
    const stream = await generationUpdates({ scope, bus, generationId: id });
    try {
      const seen = await take(stream, 1);
      const rest = untilComplete(stream);
      bus.publish('generationUpdated', id, running('BUILDING'));
      await succeed(id);
      seen.push(...(await rest));
      expect(seen.map((state) => `${state.status}/${state.phase}`)).toEqual(['RUNNING/BUILDING', 'SUCCEEDED/DONE']);
    } finally {
      await stream.return(undefined);
    }
  });

  it('generationUpdated does not step back when an earlier status event is delivered again after a newer one', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    const scope = readsOf(as(database.db, team.owner));
    const stream = await generationUpdates({ scope, bus, generationId: id });
    try {
      const seen = await take(stream, 1);
      await writePhase(id, 'BUILDING');
      bus.publish('generationUpdated', id, running('BUILDING'));
      seen.push(...(await take(stream, 1)));
      // A replaced publisher resends what the old connection had delivered; a catch-up after a reconnect can be older too.
      const next = stream.next();
      const read = scope.nextRead();
      bus.publish('generationUpdated', id, running('GENERATING'));
      // The stale event is taken on its own: the stream either shows something or reads the row.
      await Promise.race([next, read]);
      await succeed(id);
      const after = await next;
      if (!after.done) seen.push(after.value, ...(await untilComplete(stream)));
      expect(seen.map((state) => `${state.status}/${state.phase}`)).toEqual(['RUNNING/GENERATING', 'RUNNING/BUILDING', 'SUCCEEDED/DONE']);
    } finally {
      await stream.return(undefined);
    }
  });

  it('generationUpdated keeps a change written and published while its read was under way', async () => {
    const id = await createGeneration(database.db, team, 'RUNNING');
    // The pipeline moves to WRITING (written, published) after the viewer's first read began, before it ended.
    const scope = aroundFirstRead(as(database.db, team.owner), 'after', async () => {
      await writePhase(id, 'WRITING');
      bus.publish('generationUpdated', id, running('WRITING'));
    });
    const stream = await generationUpdates({ scope, bus, generationId: id });
    try {
      const seen = await take(stream, 2);
      await succeed(id);
      seen.push(...(await untilComplete(stream)));
      expect(seen.map((state) => `${state.status}/${state.phase}`)).toEqual(['RUNNING/GENERATING', 'RUNNING/WRITING', 'SUCCEEDED/DONE']);
    } finally {
      await stream.return(undefined);
    }
  });
});

const chunk = (seq: number) => ({ seq, text: `c${seq}` });
const line = (seq: number) => ({ seq, step: 'build', stream: 'STDOUT' as const, text: `line ${seq}` });
/** from..to, both included. */
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The viewer's scope, telling when its next read has ended. */
function readsOf(viewer: Scope): Scope & { nextRead(): Promise<void> } {
  let ended = () => {};
  return {
    userId: viewer.userId,
    run: (work) => viewer.run(work).finally(() => ended()),
    nextRead: () => new Promise<void>((resolve) => (ended = resolve)),
  };
}

/** The viewer's scope, with `meanwhile` done once, before or after the query of its first read. */
function aroundFirstRead(viewer: Scope, when: 'before' | 'after', meanwhile: () => Promise<void>): Scope {
  let first = true;
  return {
    userId: viewer.userId,
    run: async (work) => {
      const now = first;
      first = false;
      if (now && when === 'before') await meanwhile();
      const result = await viewer.run(work);
      if (now && when === 'after') await meanwhile();
      return result;
    },
  };
}

/** The next `count` items of a stream. */
async function take<T>(stream: AsyncIterator<T>, count: number): Promise<T[]> {
  const items: T[] = [];
  while (items.length < count) {
    const next = await stream.next();
    if (next.done) throw new Error(`the stream completed after ${items.length} of ${count} items`);
    items.push(next.value);
  }
  return items;
}

/** What a stream hands out until it completes. */
async function untilComplete<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

/** What a UI shows beside the status: read from the build's own tables, not carried by the event. */
const GenerationUpdatedWithOutputsDocument = parse(
  'subscription ($id: ID!) { generationUpdated(generationId: $id) { status buildSteps { name status } preview { url } } }',
) as TypedDocumentNode<
  { generationUpdated: { status: string; buildSteps: { name: string; status: string }[]; preview: { url: string } | null } },
  { id: string }
>;
