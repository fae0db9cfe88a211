import { describe, expect, it } from 'vitest';
import { GeneratedFileDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { fixesOf } from './support/fix-rounds.js';
import { createProject } from './support/fixtures.js';
import { startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { registryUnavailable } from './support/network.js';

// A WEB generation whose code fails the real `tsc`, healed by a fix round: the offline
// provider's "with a build error" demonstration with the real npm, tsc and vite. It
// installs from the npm registry, so it is opt-in (support/network.ts).

describe.skipIf(registryUnavailable)(`a real tsc error fixed in round 1 (${databaseKind})${registryUnavailable ? ` (skipped: ${registryUnavailable})` : ''}`, () => {
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' });

  it('fails the typecheck with TS2322, sends it back, and builds the fixed app', { timeout: 300_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A reading list with a build error' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 290_000);

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.diagnostics).toEqual([
      expect.objectContaining({ round: 0, tool: 'tsc', severity: 'ERROR', path: 'src/App.tsx', code: 'TS2322', message: "Type 'string' is not assignable to type 'number'." }),
    ]);
    expect(fixes.fixRounds.map((r) => [r.round, r.status])).toEqual([[1, 'SUCCEEDED']]);
    expect(generation.buildSteps.map((s) => [s.name, s.status])).toEqual([
      ['install', 'SUCCEEDED'],
      ['typecheck', 'FAILED'],
      ['build', 'SKIPPED'],
      ['typecheck', 'SUCCEEDED'],
      ['build', 'SUCCEEDED'],
    ]);
    const { generation: app } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: started.id, path: 'src/App.tsx' });
    expect(app?.file?.content).not.toContain('deliberate build error');
  });
});
