import { describe, expect, it } from 'vitest';
import { GenerationUpdatedDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { scriptHeldAnswer, useGeminiServer } from './support/gemini-server.js';
import { startAccepted, waitForEnd, within } from './support/generation-helpers.js';
import { collect, liveClient } from './support/live.js';

// Many viewers of one generation's status: a change is read from the database once for
// every stream it wakes in the process, not once per viewer (a move between phases of a
// running generation needs no read at all). The statements are counted at the database
// driver. The model's answer waits behind a gate (a fake Gemini) until every viewer has
// the running generation's state, so they all watch it move on, however slow the machine is.

const VIEWERS = 16;
/** The generation reads of `generationUpdated` (and of anything else reading generations by id). */
const isGenerationRead = (query: string) => /^select .* from "generations" where "generations"\."id" in/s.test(query);

describe(`generationUpdated with many viewers (${databaseKind})`, () => {
  const statements: string[] = [];
  const suite = useGeminiServer({ WS_MAX_SUBSCRIPTIONS: String(VIEWERS) }, { onQuery: (query) => void statements.push(query) });

  it('gives every viewer every state and reads each change once, not once per viewer', async () => {
    const { gate } = scriptHeldAnswer(suite.gemini, 'Shopping list', 4);
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const generation = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A shopping list shared by a family' });
    const live = liveClient(suite.server.url, suite.owner.accessToken);
    try {
      // The run has asked the model and waits for its first piece: every viewer joins it there.
      await within(gate.reached(0), 20_000, () => 'the run never asked the model');
      const viewers = Array.from({ length: VIEWERS }, () => collect(live.client, GenerationUpdatedDocument, { id: generation.id }));
      await within(Promise.all(viewers.map((viewer) => viewer.atLeast(1))), 20_000, () => 'not every viewer got the current state');
      const readsBefore = statements.filter(isGenerationRead).length;
      const firstStates = viewers.map((viewer) => viewer.items.length);
      gate.open();
      for (const viewer of viewers) expect(await within(viewer.ended, 30_000, () => 'a viewer did not complete')).toEqual({ errors: undefined });
      const reads = statements.filter(isGenerationRead).length - readsBefore;

      const done = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, generation.id);
      expect(done.status).toBe('SUCCEEDED');
      const states = viewers.map((viewer) => viewer.items.map((item) => `${item.generationUpdated.status}/${item.generationUpdated.phase}`));
      // Every viewer saw the same changes after it had the current state, ending with the terminal one.
      const changes = states.map((seen, i) => seen.slice(firstStates[i]! - 1));
      for (const seen of changes) expect(seen.at(-1)).toBe('SUCCEEDED/DONE');
      // A move between phases, applied without a read, is still the whole row as it stands.
      for (const { generationUpdated: seen } of viewers.flatMap((viewer) => viewer.items)) {
        if (seen.status === 'RUNNING') expect({ startedAt: seen.startedAt, finishedAt: seen.finishedAt, prompt: seen.prompt }).toEqual({ startedAt: done.startedAt, finishedAt: null, prompt: done.prompt });
      }
      const fewest = Math.min(...changes.map((seen) => seen.length - 1));
      expect(fewest).toBeGreaterThanOrEqual(2);
      // One read per viewer per change would be at least VIEWERS × fewest. A move between
      // phases of the run is applied without a read; the terminal state is read (it
      // carries the outcome), once for every viewer.
      expect(reads).toBeGreaterThanOrEqual(1);
      expect(reads).toBeLessThan(VIEWERS * fewest);
    } finally {
      await live.dispose();
    }
  });
});
