import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { BuildLogsDocument, GenerationChunksDocument, GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { getGeneration, startInNewProject, waitForEnd, within } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { collect, isContiguousFromZero, liveClient } from './support/live.js';

// The resumable streams over graphql-ws: replay, live, resume after a disconnect,
// completion, and many subscribers of one generation.

describe(`generation streams over graphql-ws (${databaseKind})`, () => {
  // Slow enough that a client can leave and come back mid-stream.
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '25' });

  const start = (prompt: string) => startInNewProject(suite.owner, prompt);

  it('resumes after a disconnect mid-stream: both parts together are every seq once, in order', async () => {
    const generation = await start('A habit tracker with streaks, reminders and a weekly chart');
    const first = liveClient(suite.server.url, suite.owner.accessToken);
    const before = collect(first.client, GenerationChunksDocument, { id: generation.id });
    await within(before.atLeast(3), 20_000, () => `only ${before.items.length} chunks arrived`);
    await first.dispose(); // the connection drops mid-stream
    const seen = before.items.map((item) => item.generationChunks);
    const last = seen.at(-1)!.seq;

    const second = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const after = collect(second.client, GenerationChunksDocument, { id: generation.id, afterSeq: last });
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

  it('replays a generation that finished long ago in full, then completes (chunks and build log)', async () => {
    const generation = await start('A recipe box');
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

  it('generationUpdated emits the current state first and completes after the terminal state', async () => {
    const generation = await start('A pomodoro timer');
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const updates = collect(live.client, GenerationUpdatedDocument, { id: generation.id });
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
    const generation = await start('A recipe box');
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      const updates = collect(live.client, GenerationUpdatedWithOutputsDocument, { id: generation.id });
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
    const generation = await start('A shared shopping list for a family');
    const clients = Array.from({ length: 100 }, () => liveClient(suite.server.url, suite.owner.accessToken));
    try {
      const streams = clients.map(({ client }) => collect(client, GenerationChunksDocument, { id: generation.id }));
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

/** What a UI shows beside the status: read from the build's own tables, not carried by the event. */
const GenerationUpdatedWithOutputsDocument = parse(
  'subscription ($id: ID!) { generationUpdated(generationId: $id) { status buildSteps { name status } preview { url } } }',
) as TypedDocumentNode<
  { generationUpdated: { status: string; buildSteps: { name: string; status: string }[]; preview: { url: string } | null } },
  { id: string }
>;
