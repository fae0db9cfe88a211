import { describe, expect, it } from 'vitest';
import { BuildLogsDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { startAccepted, waitForEnd, within } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { collect, isContiguousFromZero, liveClient } from './support/live.js';

// Viewers who join a generation with a long history (many pages of build-log lines, which
// streams of one process share) each replay all of it, once and in order, whether they
// start at the beginning or in the middle of a page.

describe(`replay of a long history to viewers joining together (${databaseKind})`, () => {
  // `flutter build web` prints 700 lines: a build log of several pages.
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' }, 'chatty');

  it('gives every joining viewer every line once, in order, from the start or from the middle of a page', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A long build' });
    await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
    const viewers = [liveClient(suite.server.url, suite.owner.accessToken), liveClient(suite.server.url, suite.owner.accessToken), liveClient(suite.server.url, suite.owner.accessToken)];
    try {
      const fromStart = viewers.slice(0, 2).map((viewer) => collect(viewer.client, BuildLogsDocument, { id: generation.id }));
      const fromMiddle = collect(viewers[2]!.client, BuildLogsDocument, { id: generation.id, afterSeq: 250 });
      for (const stream of [...fromStart, fromMiddle]) {
        expect(await within(stream.ended, 60_000, () => 'a replay did not complete')).toEqual({ errors: undefined });
      }
      const [first, second] = fromStart.map((stream) => stream.items.map((item) => item.buildLogs));
      expect(first!.length, 'the history is not several pages long').toBeGreaterThan(600);
      expect(isContiguousFromZero(first!.map((line) => line.seq))).toBe(true);
      expect(second).toEqual(first);
      expect(fromMiddle.items.map((item) => item.buildLogs)).toEqual(first!.slice(251));
    } finally {
      await Promise.all(viewers.map((viewer) => viewer.dispose()));
    }
  });
});
