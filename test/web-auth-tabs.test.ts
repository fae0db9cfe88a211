import { join } from 'node:path';
import { execa } from 'execa';
import type { Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { chromiumMissing, outputDir, useBrowser } from './e2e/browser.js';
import { RefreshSessionDocument } from './gql/graphql.js';
import { PASSWORD, uniqueEmail } from './support/fixtures.js';
import { repoRoot } from './support/generation-helpers.js';
import { useTestServer } from './support/server.js';

// Two tabs of the reference web client (web/src/api/auth.ts) that share one refresh token,
// as after the browser's "Duplicate tab", which copies sessionStorage. Refresh tokens
// rotate with reuse detection, so a tab that presents the token the other tab already
// spent would end the session of both: the tabs must refresh one at a time and hand the
// rotated token over. The access tokens live shorter than the client's early-refresh
// margin, so every request a page makes refreshes first.

if (chromiumMissing) console.warn(`Skipping the web client tabs suite: ${chromiumMissing}.`);

beforeAll(async () => {
  // The client as `npm install` builds it, from this checkout's sources (see test/e2e/web-client.test.ts).
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
const server = useTestServer({ ACCESS_TOKEN_TTL_SECONDS: '20' });

const storedRefreshToken = (page: Page) => page.evaluate(() => sessionStorage.getItem('kiln.refreshToken'));

/** Signs up a new user in `page`, which shows the projects afterwards (loading them refreshed the token). */
async function signUp(page: Page, email: string) {
  await page.goto(server.url);
  await page.getByRole('textbox', { name: 'Email' }).fill(email);
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByText('No projects yet.').waitFor();
}

/** Creates a project from the projects page (a refresh, then the request) and goes back; false if the page was signed out instead. */
async function createProject(page: Page, name: string): Promise<boolean> {
  await page.getByRole('textbox', { name: 'Project name' }).fill(name);
  await page.getByRole('button', { name: 'Create project' }).click();
  const signedOut = page.getByRole('button', { name: 'Sign in' });
  await page.getByRole('heading', { name, exact: true }).or(signedOut).waitFor();
  if (await signedOut.isVisible()) return false;
  await page.getByRole('link', { name: 'Kiln' }).click();
  await page.getByRole('link', { name, exact: true }).or(signedOut).waitFor();
  return !(await signedOut.isVisible());
}

describe.skipIf(chromiumMissing)('tabs of the web client that share a refresh token', () => {
  const browser = useBrowser('web-auth-tabs');

  it('stay signed in when each refreshes in turn and both at once, and a tab of another user keeps its own session', async () => {
    const first = browser.page;
    const email = uniqueEmail('e2e-tabs');
    await signUp(first, email);

    // "Duplicate tab": the second page starts with a copy of the first one's sessionStorage,
    // which the first one spends before the second has loaded (so it missed the message).
    const stored = await first.evaluate(() => Object.fromEntries(Object.entries(sessionStorage)));
    expect(await createProject(first, 'First tab')).toBe(true);
    const second = await browser.context.newPage();
    const secondErrors: string[] = [];
    second.on('pageerror', (error) => secondErrors.push(String(error)));
    await second.addInitScript((entries: Record<string, string>) => {
      if (sessionStorage.length === 0) for (const [key, value] of Object.entries(entries)) sessionStorage.setItem(key, value);
    }, stored);
    try {
      // Loading refreshes in the second tab: it must take the pair the first one rotated to.
      await second.goto(server.url);
      await second.getByRole('link', { name: 'First tab', exact: true }).or(second.getByRole('button', { name: 'Sign in' })).waitFor();
      expect(await second.getByRole('link', { name: 'First tab', exact: true }).isVisible()).toBe(true);

      // A tab of another user in the same browser, which must not take the first user's tokens.
      const other = await browser.context.newPage();
      const otherEmail = uniqueEmail('e2e-tabs-other');
      await signUp(other, otherEmail);
      const otherToken = await storedRefreshToken(other);

      // Then a refresh in the first, in the second, and in both at once.
      expect(await createProject(first, 'First again')).toBe(true);
      expect(await createProject(second, 'Second tab')).toBe(true);
      expect(await Promise.all([createProject(first, 'First at once'), createProject(second, 'Second at once')])).toEqual([true, true]);

      for (const page of [first, second]) await expect.poll(() => page.locator('.who').textContent()).toBe(email);
      await expect.poll(() => storedRefreshToken(first)).toBe(await storedRefreshToken(second));
      expect(await other.locator('.who').textContent()).toBe(otherEmail);
      expect(await storedRefreshToken(other)).toBe(otherToken);

      await browser.screenshot('first-tab');
      await second.screenshot({ path: join(outputDir, 'web-auth-tabs', 'second-tab.png'), fullPage: true });
      await other.close();

      // The session is alive on the server: the token the tabs now keep is still good.
      const { data } = await server.client().request(RefreshSessionDocument, { refreshToken: (await storedRefreshToken(first))! });
      expect(data?.refreshSession.__typename).toBe('AuthSession');
      expect(browser.consoleErrors).toEqual([]);
      expect(secondErrors).toEqual([]);
      expect(browser.escaped).toEqual([]);
    } finally {
      await second.close();
    }
  });
});
