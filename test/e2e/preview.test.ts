import { describe, expect, it } from 'vitest';
import { GenerationPreviewDocument } from '../gql/graphql.js';
import { databaseKind } from '../support/db.js';
import { createProject } from '../support/fixtures.js';
import { startAccepted, waitForEnd } from '../support/generation-helpers.js';
import { useGenerationServer } from '../support/suite-server.js';
import { chromiumMissing, useBrowser } from './browser.js';

// The preview as a person sees it: a FLUTTER generation's bundle (fake flutter, whose
// index.html has <base href="/">) loaded in Chromium from its signed URL, in an iframe
// as a client embeds it. The page is sandboxed (opaque origin), yet its script runs,
// fetches a relative asset and shows an image, all under the preview's path.

if (chromiumMissing) console.warn(`Skipping the preview browser suite: ${chromiumMissing}.`);

describe.skipIf(chromiumMissing)(`a FLUTTER preview in Chromium (${databaseKind})`, () => {
  const suite = useGenerationServer();
  const browser = useBrowser('preview');

  it('renders the app and its relative assets from the signed URL, inside an iframe', { timeout: 60_000 }, async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const prompt = 'A bird song quiz';
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id)).status).toBe('SUCCEEDED');
    const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
    const url = generation!.preview!.url;

    const failed: string[] = [];
    browser.page.on('response', (response) => {
      if (response.status() >= 400) failed.push(`${response.status()} ${response.url()}`);
    });
    // A deep link: the client-side route gets index.html, whose base keeps assets under the preview.
    await browser.page.setContent(`<iframe title="Preview" src="${url}birds/robin" width="800" height="600"></iframe>`);
    const frame = browser.page.frameLocator('iframe[title="Preview"]');
    await expect.poll(() => frame.locator('h1').textContent(), { timeout: 20_000 }).toContain(prompt);
    await expect.poll(() => frame.locator('#asset').textContent(), { timeout: 20_000 }).toBe('Hello from the asset bundle');
    await expect.poll(() => frame.locator('body').getAttribute('data-logo'), { timeout: 20_000 }).toBe('loaded');
    await browser.screenshot('flutter-preview');

    // Sandboxed: an opaque origin, so the app cannot reach Kiln's cookies or storage.
    const origin = await browser.page.frames()[1]!.evaluate(() => window.origin);
    expect(origin).toBe('null');
    expect(failed).toEqual([]);
    expect(browser.escaped).toEqual([]);
    expect(browser.consoleErrors).toEqual([]);
  });
});
