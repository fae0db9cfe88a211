import { describe, expect, it } from 'vitest';
import { chromiumMissing, useBrowser } from './e2e/browser.js';
import { useTestServer } from './support/server.js';

// The GraphiQL page (GET /graphql from a browser, when the schema is exposed) cannot be
// framed by another site, which could fill in a mutation and trick a click on Run, and a
// token typed in its Headers tab is not left behind in localStorage.

const server = useTestServer();
const openGraphiQL = (query = '') => fetch(`${server.url}/graphql${query}`, { headers: { accept: 'text/html' } });

describe('the GraphiQL page', () => {
  it('forbids framing and sniffing and sends no referrer', async () => {
    const page = await openGraphiQL(`?query=${encodeURIComponent('mutation { signOut { __typename } }')}`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/(^|;\s*)frame-ancestors 'none'(;|$)/);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
  });

  it('tells GraphiQL not to keep the headers typed in it', async () => {
    const html = await (await openGraphiQL()).text();
    const options = /renderYogaGraphiQL\([^,]+, (\{.*\})\);/.exec(html)?.[1];
    expect(JSON.parse(options ?? '{}')).toMatchObject({ shouldPersistHeaders: false });
  });
});

if (chromiumMissing) console.warn(`Skipping the GraphiQL header checks in Chromium: ${chromiumMissing}.`);

describe.skipIf(chromiumMissing)('the GraphiQL page in Chromium', () => {
  const browser = useBrowser('graphiql-headers');

  it('keeps a token typed in the Headers tab out of localStorage', async () => {
    const { page } = browser;
    const token = 'Bearer not-a-real-token-but-a-secret-one';
    await page.goto(`${server.url}/graphql?query=${encodeURIComponent('{ __typename }')}`);
    await page.getByText('Headers', { exact: true }).click();
    await page.locator('.graphiql-editor-tool .graphiql-editor').last().click();
    await page.keyboard.insertText(JSON.stringify({ Authorization: token }));
    // Running the query stores the tabs' state (query, variables, headers) in localStorage.
    await page.getByRole('button', { name: /execute query/i }).click();
    await expect.poll(() => page.locator('.graphiql-response').innerText(), { timeout: 30_000 }).toContain('__typename');
    // GraphiQL writes its tabs half a second after a change (debounced): past the poll's default second on a loaded machine.
    await expect.poll(() => page.evaluate(() => Object.keys(localStorage).length), { timeout: 30_000 }).toBeGreaterThan(0);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }));
    expect(stored).not.toContain('not-a-real-token');
  });

  it('is not shown inside a frame of another page', async () => {
    const page = await browser.context.newPage();
    try {
      await page.setContent(`<iframe src="${server.url}/graphql"></iframe>`);
      const frame = await (await page.locator('iframe').elementHandle())!.contentFrame();
      await frame!.waitForLoadState();
      expect(frame!.url()).not.toContain('/graphql');
    } finally {
      await page.close();
    }
  });
});
