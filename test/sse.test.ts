import { print } from 'graphql';
import { describe, expect, it } from 'vitest';
import { GenerationChunksDocument, GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { signUp } from './support/fixtures.js';
import { releaseOneByOne, scriptHeldAnswer, useGeminiServer } from './support/gemini-server.js';
import { startInNewProject, waitForEnd, within } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { isContiguousFromZero, sseSubscribe } from './support/live.js';

// Subscriptions over Server-Sent Events: `Accept: text/event-stream` on POST or GET
// /graphql (GraphQL over SSE, "distinct connections": one stream per operation,
// `event: next` per result, `event: complete` at the end), as EventSource-style
// clients and graphql-sse use them.

describe(`generation streams over SSE (${databaseKind})`, () => {
  const suite = useGenerationServer();

  const start = (prompt: string) => startInNewProject(suite.owner, prompt);

  it('works over GET too, and a finished generation replays in full and completes', async () => {
    const generation = await start('A metronome');
    const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
    const replay = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationChunksDocument, { id: generation.id }, { method: 'GET' });
    expect(await within(replay.ended, 10_000, () => 'the replay did not complete')).toEqual({ completed: true, errors: undefined });
    expect(isContiguousFromZero(replay.items.map((item) => item.generationChunks.seq))).toBe(true);
    expect(replay.items.map((item) => item.generationChunks.text).join('')).toBe(done.output);

    const updates = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationUpdatedDocument, { id: generation.id });
    expect(await within(updates.ended, 10_000, () => 'generationUpdated did not complete')).toEqual({ completed: true, errors: undefined });
    expect(updates.items.map((item) => item.generationUpdated)).toEqual([expect.objectContaining({ status: 'SUCCEEDED', phase: 'DONE' })]);
  });

  it('a generation of another user is an error event on that stream (NOT_FOUND), then complete', async () => {
    const generation = await start('Private');
    const stranger = await signUp(suite.server);
    const denied = sseSubscribe(suite.server.url, stranger.accessToken, GenerationChunksDocument, { id: generation.id });
    const outcome = await within(denied.ended, 10_000, () => 'the stream did not end');
    expect(outcome).toEqual({
      completed: true,
      errors: [expect.objectContaining({ message: 'Generation not found.', extensions: { code: 'NOT_FOUND' } })],
    });
    expect(denied.items).toEqual([]);
  });
});

describe(`generation streams over SSE, live (${databaseKind})`, () => {
  // The model's answer waits at a gate, let out piece by piece: the stream is dropped mid-way however slow the machine.
  const suite = useGeminiServer();

  it('resumes after the stream is dropped mid-way: both parts together are every seq once, in order', async () => {
    const prompt = 'A reading list with ratings and notes';
    const { gate, pieces } = scriptHeldAnswer(suite.gemini, prompt, 8);
    const generation = await startInNewProject(suite.owner, prompt);
    const first = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationChunksDocument, { id: generation.id });
    let second: typeof first | undefined;
    try {
      await within(releaseOneByOne(gate, pieces.slice(0, 3), first), 20_000, () => `only ${first.items.length} chunks arrived`);
      first.abort(); // the rest of the answer is still held
      expect((await first.ended).completed).toBe(false);
      const seen = first.items.map((item) => item.generationChunks);
      const last = seen.at(-1)!.seq;

      const resumed = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationChunksDocument, { id: generation.id, afterSeq: last });
      second = resumed;
      // Back in while the answer still streams: one more piece live, then the rest.
      await within(releaseOneByOne(gate, pieces.slice(3, 4), resumed), 20_000, () => 'the resumed stream got nothing');
      gate.open();
      expect(await within(resumed.ended, 30_000, () => 'the resumed stream did not complete')).toEqual({ completed: true, errors: undefined });
      const rest = resumed.items.map((item) => item.generationChunks);
      expect(rest.length, 'the disconnect was not mid-stream').toBeGreaterThan(0);
      const all = [...seen, ...rest];
      expect(isContiguousFromZero(all.map((chunk) => chunk.seq))).toBe(true);
      const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
      expect(all.map((chunk) => chunk.text).join('')).toBe(done.output);
    } finally {
      first.abort();
      second?.abort();
    }
  });
});

describe(`a subscription that does not accept SSE (${databaseKind})`, () => {
  const suite = useGenerationServer({ LIVE_STREAMS_PER_USER: '1' });

  it('gets 406 and holds no LIVE_STREAMS_PER_USER slot: the next SSE stream runs', async () => {
    const generation = await startInNewProject(suite.owner, 'A packing list');
    const subscription = { query: print(GenerationChunksDocument), variables: { id: generation.id } };
    for (let i = 0; i < 3; i++) {
      const refused = await suite.owner.client.post(subscription, { accept: 'application/json' });
      expect(refused.status).toBe(406);
      await refused.body?.cancel();
    }
    const stream = sseSubscribe(suite.server.url, suite.owner.accessToken, GenerationChunksDocument, { id: generation.id });
    expect(await within(stream.ended, 30_000, () => 'the SSE stream did not complete')).toEqual({ completed: true, errors: undefined });
    expect(isContiguousFromZero(stream.items.map((item) => item.generationChunks.seq))).toBe(true);
  });
});
