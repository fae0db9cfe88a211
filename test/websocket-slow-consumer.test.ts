import { describe, expect, it } from 'vitest';
import { GenerationChunksDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { LONG_ANSWER, useFakeOpenAi } from './support/fake-openai.js';
import { createProject } from './support/fixtures.js';
import { startAccepted, waitForEnd, within } from './support/generation-helpers.js';
import { isContiguousFromZero, RawSocket } from './support/live.js';
import { useGenerationServer } from './support/suite-server.js';

// A client that stops reading while a generation streams megabytes: the server must
// not buffer the stream for it. graphql-ws waits for each frame to reach the kernel
// before it takes the next item, so the stream stalls at one frame; once more than
// SUBSCRIPTION_BUFFER_LIMIT live items have been published past the stalled one, the
// subscription ends with SLOW_CONSUMER and the client resumes from its last seq.

describe(`a slow consumer over graphql-ws (${databaseKind})`, () => {
  const llm = useFakeOpenAi({ kind: 'stream', chunks: LONG_ANSWER });
  const suite = useGenerationServer(() => ({
    ...llm.kilnEnv,
    SUBSCRIPTION_BUFFER_LIMIT: '20',
    // The paused client cannot answer pings; the test is not about dead peers.
    WS_KEEPALIVE_MS: '0',
  }));

  it('ends only that subscription with SLOW_CONSUMER instead of buffering, and the client resumes from its last seq', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const raw = await RawSocket.open(suite.server.url);
    try {
      await raw.init(suite.owner.accessToken);
      const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'Write at length' });
      raw.subscribe('chunks', GenerationChunksDocument, { id: generation.id });
      raw.socket.pause(); // stops reading: the server's frames pile up in the socket buffers

      const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id, 60_000);
      const totalBytes = Buffer.byteLength(done.output, 'utf8');
      expect(totalBytes).toBeGreaterThan(10_000_000);

      raw.socket.resume();
      const end = await within(
        raw.waitFor((m) => m.id === 'chunks' && m.type !== 'next'),
        30_000,
        () => `the slow subscription did not end; ${raw.messages.length} messages`,
      );
      expect(end, JSON.stringify(end)).toMatchObject({ type: 'complete' });
      const results = raw.messages.filter((m) => m.id === 'chunks' && m.type === 'next').map((m) => m.payload as Result);
      const last = results.at(-1)!;
      expect(last.errors).toEqual([
        expect.objectContaining({
          message: 'Too far behind; resubscribe with afterSeq set to the last seq you received.',
          extensions: { code: 'SLOW_CONSUMER', lastSeq: expect.any(Number) },
        }),
      ]);
      const received = results.slice(0, -1).map((r) => r.data!.generationChunks);
      const lastSeq = last.errors![0]!.extensions.lastSeq;
      expect(isContiguousFromZero(received.map((c) => c.seq))).toBe(true);
      expect(received.at(-1)!.seq).toBe(lastSeq);
      // What the server sent is what the socket buffers held, not the whole stream: it
      // stopped instead of queueing the rest in memory.
      expect(raw.bytes).toBeLessThan(totalBytes / 2);

      // Only that subscription ended: on the same socket the client resumes where it stopped.
      raw.subscribe('rest', GenerationChunksDocument, { id: generation.id, afterSeq: lastSeq });
      const restEnd = await within(raw.waitFor((m) => m.id === 'rest' && m.type !== 'next'), 60_000, () => 'the resumed stream did not complete');
      expect(restEnd.type).toBe('complete');
      const rest = raw.messages.filter((m) => m.id === 'rest' && m.type === 'next').map((m) => m.payload as Result);
      expect(rest.every((r) => r.errors === undefined)).toBe(true);
      const all = [...received, ...rest.map((r) => r.data!.generationChunks)];
      expect(isContiguousFromZero(all.map((c) => c.seq))).toBe(true);
      expect(all.map((c) => c.text).join('')).toBe(done.output);
    } finally {
      raw.close();
    }
  });
});

type Result = {
  data?: { generationChunks: { seq: number; text: string } } | null;
  errors?: { message: string; extensions: { code: string; lastSeq: number } }[];
};
