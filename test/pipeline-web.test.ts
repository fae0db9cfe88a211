import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GeneratedFileDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { rawId, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { registryUnavailable } from './support/network.js';

// The WEB target for real: the offline app built with the real npm, tsc and vite, as
// a user of the default setup gets it. It installs from the npm registry (about 20 s),
// so it is opt-in (support/network.ts).

describe.skipIf(registryUnavailable)(`the WEB target with the real toolchain (${databaseKind})${registryUnavailable ? ` (skipped: ${registryUnavailable})` : ''}`, () => {
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' });

  it('installs, typechecks and builds the offline app', { timeout: 180_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    const prompt = 'A reading list with titles, authors and a "done" checkbox';
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 170_000);

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    expect(generation.buildSteps.map((s) => [s.name, s.command, s.status, s.exitCode])).toEqual([
      ['install', 'npm install --ignore-scripts --no-package-lock --no-audit --no-fund', 'SUCCEEDED', 0],
      ['typecheck', 'npm exec -- tsc --noEmit --pretty false', 'SUCCEEDED', 0],
      ['build', 'npm exec -- vite build --base ./', 'SUCCEEDED', 0],
    ]);
    expect(generation.buildLog.some((l) => l.step === 'build' && /built in/.test(l.text))).toBe(true);

    const { generation: app } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: generation.id, path: 'src/App.tsx' });
    expect(app?.file?.content).toContain(JSON.stringify(prompt));
    expect(generation.files.map((f) => f.path)).toEqual(
      expect.arrayContaining(['index.html', 'package.json', 'src/App.tsx', 'src/main.tsx', 'tsconfig.json']),
    );

    // The built app is in the workspace, ready to preview: relative asset URLs work under the preview's path.
    const workspace = join(suite.server.workspacesDir, rawId(project.id), rawId(generation.id));
    expect(existsSync(join(workspace, 'dist', 'index.html'))).toBe(true);
    expect(await readFile(join(workspace, 'dist', 'index.html'), 'utf8')).toMatch(/<script type="module"[^>]+src="\.\/assets\//);
  });
});
