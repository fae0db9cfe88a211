import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { GenerationChunksDocument, GenerationUpdatedDocument, ViewerDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { scriptHeldAnswer, useGeminiServer } from './support/gemini-server.js';
import { startAccepted, within } from './support/generation-helpers.js';
import { collect, liveClient } from './support/live.js';
import { LogCapture } from './support/log-capture.js';

// A live stream that fails unexpectedly ends that one operation with "Unexpected error."
// and a request id that the log also has, never the cause; the socket's other operations
// go on and the socket stays open. Here the stream's final read fails: the function it
// reads history through is renamed away while the generation runs. The model's answer is
// held after its first piece (a gated fake Gemini) until the function is gone, so the
// generation is still streaming then however slow the machine is.

describe(`a live stream that fails unexpectedly (${databaseKind})`, () => {
  const logs = new LogCapture();
  const suite = useGeminiServer({ LOG_LEVEL: 'info' }, { logTo: logs });

  it('ends only that operation, masked with a request id the log has; the other operations and the socket go on', async () => {
    const { gate } = scriptHeldAnswer(suite.gemini, 'Failing reads', 4, 1);
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A stream whose reads will fail' });
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    const { db } = suite.server.database;
    let renamed = false;
    try {
      const chunks = collect(live.client, GenerationChunksDocument, { id: generation.id });
      const updates = collect(live.client, GenerationUpdatedDocument, { id: generation.id });
      // The first piece has reached the subscriber; the rest waits for the gate.
      await within(chunks.atLeast(1), 30_000, () => 'no chunk arrived');
      await db.execute(sql`alter function kiln.chunks_after(uuid, integer, integer) rename to chunks_after_gone`);
      renamed = true;
      gate.open();

      const failed = await within(chunks.ended, 60_000, () => 'the failing stream did not end');
      expect(failed.error).toBeUndefined(); // a result, not a socket error
      expect(failed.errors).toEqual([expect.objectContaining({ message: 'Unexpected error.', extensions: expect.objectContaining({ code: 'INTERNAL_SERVER_ERROR' }) })]);
      expect(JSON.stringify(failed.errors)).not.toMatch(/chunks_after|function|does not exist|\/work\/|node_modules/);
      const requestId = (failed.errors![0]!.extensions as { requestId?: string }).requestId;
      expect(requestId).toEqual(expect.any(String));
      const logged = logs.records().find((record) => record.requestId === requestId && record.msg === 'unexpected error');
      expect(JSON.stringify(logged)).toMatch(/chunks_after/);

      // The other stream on the socket sees the generation through to its end.
      const done = await within(updates.ended, 60_000, () => 'generationUpdated did not end');
      expect(done.errors).toBeUndefined();
      expect(updates.items.at(-1)?.generationUpdated.status).toBe('SUCCEEDED');
      // And the socket still answers.
      const viewer = collect(live.client, ViewerDocument, {});
      await viewer.ended;
      expect(viewer.items).toEqual([{ viewer: expect.objectContaining({ email: suite.owner.email }) }]);
    } finally {
      if (renamed) await db.execute(sql`alter function kiln.chunks_after_gone(uuid, integer, integer) rename to chunks_after`);
      await live.dispose();
    }
  });
});
