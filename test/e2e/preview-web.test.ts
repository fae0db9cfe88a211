import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenerationPreviewDocument } from '../gql/graphql.js';
import { databaseKind } from '../support/db.js';
import { createProject, signUp, type TestUser } from '../support/fixtures.js';
import { type GenerationServer, startAccepted, startGenerationServer, waitForEnd } from '../support/generation-helpers.js';
import { registryUnavailable } from '../support/network.js';
import { type BrowserSession, chromiumMissing, openBrowser } from './browser.js';

// A WEB generation built for real (npm install, tsc, vite build --base ./) and its
// preview rendered in Chromium. It installs from the npm registry, so it is opt-in
// (support/network.ts).

const skipped = registryUnavailable ?? chromiumMissing;
if (skipped) console.warn(`Skipping the WEB preview suite: ${skipped}.`);

describe.skipIf(skipped)(`a WEB preview built with the real toolchain, in Chromium (${databaseKind})`, () => {
  let server: GenerationServer;
  let owner: TestUser;
  let browser: BrowserSession;

  beforeAll(async () => {
    server = await startGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' });
    owner = await signUp(server);
    browser = await openBrowser('preview-web');
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('renders the React app from its signed URL, module scripts and all', { timeout: 240_000 }, async () => {
    const project = await createProject(owner.client, { target: 'WEB' });
    const prompt = 'A reading list with titles, authors and a done checkbox';
    const started = await startAccepted(owner.client, { projectId: project.id, prompt });
    const ended = await waitForEnd(server, owner.client, owner.accessToken, started.id, 230_000);
    expect(ended.status, JSON.stringify(ended.error)).toBe('SUCCEEDED');
    const { generation } = await owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
    await browser.page.setContent(`<iframe title="Preview" src="${generation!.preview!.url}" width="1000" height="700"></iframe>`);
    const frame = browser.page.frameLocator('iframe[title="Preview"]');
    await expect.poll(() => frame.locator('#root').innerText(), { timeout: 30_000 }).toContain('reading list');
    await browser.screenshot('web-preview');
    expect(browser.escaped).toEqual([]);
    expect(browser.consoleErrors).toEqual([]);
  });
});
