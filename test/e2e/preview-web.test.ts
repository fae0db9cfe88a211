import { describe, expect, it } from 'vitest';
import { GenerationPreviewDocument } from '../gql/graphql.js';
import { databaseKind } from '../support/db.js';
import { createProject } from '../support/fixtures.js';
import { startAccepted, waitForEnd } from '../support/generation-helpers.js';
import { registryUnavailable } from '../support/network.js';
import { useGenerationServer } from '../support/suite-server.js';
import { chromiumMissing, useBrowser } from './browser.js';

// A WEB generation built for real (npm install, tsc, vite build --base ./) and its
// preview rendered in Chromium. It installs from the npm registry, so it is opt-in
// (support/network.ts).

const skipped = registryUnavailable ?? chromiumMissing;
if (skipped) console.warn(`Skipping the WEB preview suite: ${skipped}.`);

describe.skipIf(skipped)(`a WEB preview built with the real toolchain, in Chromium (${databaseKind})`, () => {
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' });
  const browser = useBrowser('preview-web');

  it('renders the React app from its signed URL, module scripts and all', { timeout: 240_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'WEB' });
    const prompt = 'A reading list with titles, authors and a done checkbox';
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const ended = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 230_000);
    expect(ended.status, JSON.stringify(ended.error)).toBe('SUCCEEDED');
    const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
    await browser.page.setContent(`<iframe title="Preview" src="${generation!.preview!.url}" width="1000" height="700"></iframe>`);
    const frame = browser.page.frameLocator('iframe[title="Preview"]');
    await expect.poll(() => frame.locator('#root').innerText(), { timeout: 30_000 }).toContain('reading list');
    await browser.screenshot('web-preview');
    expect(browser.escaped).toEqual([]);
    expect(browser.consoleErrors).toEqual([]);
  });
});
