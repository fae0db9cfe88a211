import type { Locator } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createProject, signUp } from '../support/fixtures.js';
import { startAccepted } from '../support/generation-helpers.js';
import { useGenerationServer } from '../support/suite-server.js';
import { chromiumMissing, useBrowser } from './browser.js';

/** Monaco renders spaces as no-break spaces. */
const textOf = async (locator: Locator) => (await locator.innerText()).replace(/\u00a0/g, ' ');

if (chromiumMissing) console.warn(`Skipping the GraphiQL browser suite: ${chromiumMissing}.`);

describe.skipIf(chromiumMissing)('GraphiQL in Chromium with no network beyond loopback', () => {
  const suite = useGenerationServer();
  const browser = useBrowser('graphiql');

  it('renders from Kiln alone, opens on the example document and loads the schema', async () => {
    const { page } = browser;
    await page.goto(`${suite.server.url}/graphql`);
    // The example document is in the editor.
    await expect.poll(() => textOf(page.locator('.graphiql-editor').first()), { timeout: 30_000 }).toContain('Welcome to Kiln');
    await browser.screenshot('1-editor');

    // The documentation explorer lists the root types from the introspected schema.
    await page.getByRole('button', { name: /show documentation explorer/i }).click();
    const docs = page.locator('.graphiql-doc-explorer');
    await expect.poll(() => docs.innerText(), { timeout: 30_000 }).toMatch(/Query/);
    await expect.poll(() => docs.innerText()).toMatch(/Subscription/);
    await browser.screenshot('2-docs');
    // The editor's language features run in the workers Kiln serves.
    expect(browser.requested.filter((url) => /\/graphiql\/[a-z]+\.worker-/.test(url)).length).toBeGreaterThan(0);

    expect(browser.escaped).toEqual([]);
    expect(browser.consoleErrors).toEqual([]);
  });

  it('serves its scripts, styles, workers and favicon from /graphiql/, cached for a year', async () => {
    const page = await (await fetch(`${suite.server.url}/graphql`, { headers: { accept: 'text/html' } })).text();
    const urls = [...page.matchAll(/(?:src|href)="([^"]+)"|"(\/graphiql\/[^"]+)"/g)].map((match) => match[1] ?? match[2]!);
    expect(urls.filter((url) => !url.startsWith('/graphiql/'))).toEqual([]);
    expect(urls.map((url) => url.replace(/-[0-9a-f]{12}\./, '.')).sort()).toEqual(
      ['/graphiql/editor.worker.js', '/graphiql/favicon.ico', '/graphiql/graphiql.css', '/graphiql/graphiql.js', '/graphiql/graphql.worker.js', '/graphiql/json.worker.js'],
    );
    for (const url of urls) {
      const response = await fetch(`${suite.server.url}${url}`);
      expect(response.status, url).toBe(200);
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    }
    expect((await fetch(`${suite.server.url}/graphiql/graphiql-000000000000.js`)).status).toBe(404);
  });

  it('follows a generation over a subscription with the token in the Headers tab', async () => {
    const { page } = browser;
    const user = await signUp(suite.server);
    const project = await createProject(user.client, { target: 'FLUTTER' });
    const generation = await startAccepted(user.client, { projectId: project.id, prompt: 'A packing list' });
    const query = `subscription { generationUpdated(generationId: "${generation.id}") { status phase } }`;
    await page.goto(`${suite.server.url}/graphql?query=${encodeURIComponent(query)}`);
    await page.getByText('Headers', { exact: true }).click();
    await page.locator('.graphiql-editor-tool .graphiql-editor').last().click();
    await page.keyboard.insertText(JSON.stringify({ Authorization: `Bearer ${user.accessToken}` }));
    await page.getByRole('button', { name: /execute query/i }).click();
    const response = page.locator('.graphiql-response');
    await expect.poll(() => textOf(response), { timeout: 30_000 }).toMatch(/"status": "SUCCEEDED"/);
    await browser.screenshot('3-subscription');
    expect(browser.escaped).toEqual([]);
    expect(browser.consoleErrors).toEqual([]);
  });
});
