import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Page, WebSocketRoute } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProjectDocument, ProjectsDocument, RefreshSessionDocument } from '../gql/graphql.js';
import { signIn, uniqueEmail } from '../support/fixtures.js';
import { getGeneration, repoRoot } from '../support/generation-helpers.js';
import { useTestServer } from '../support/server.js';
import { useGenerationServer } from '../support/suite-server.js';
import { chromiumMissing, outputDir, useBrowser } from './browser.js';

// The reference client (web/) in Chromium, served by Kiln at `/`, found by the accessible
// names that are part of the contract. FLUTTER with the fake flutter (the WEB target's
// real build needs the npm registry) and the offline provider, slowed down enough for
// its output to be seen growing.

if (chromiumMissing) console.warn(`Skipping the web client browser suite: ${chromiumMissing}.`);

const PASSWORD = 'correct horse battery staple';

beforeAll(async () => {
  // The client as `npm install` builds it (prepare → build:web), from this checkout's sources;
  // without the test runner's NODE_ENV, which would make a development build.
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '30' });

describe('serving the built client at /', () => {
  it('answers client routes with index.html, revalidated on every load', async () => {
    for (const path of ['/', '/projects/UHJvamVjdDox']) {
      const response = await fetch(`${suite.server.url}${path}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/html/);
      expect(response.headers.get('cache-control')).toBe('no-cache');
      expect(await response.text()).toContain('<div id="root">');
    }
  });

  it('caches the hashed assets for a year and 404s what does not exist', async () => {
    const [script] = (await readdir(`${repoRoot}/web/dist/assets`)).filter((name) => name.endsWith('.js'));
    const response = await fetch(`${suite.server.url}/assets/${script}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/javascript/);
    expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect((await fetch(`${suite.server.url}/assets/missing-0000.js`)).status).toBe(404);
    expect((await fetch(`${suite.server.url}/%2e%2e/package.json`)).status).toBe(404);
  });

  it('leaves /graphql to the API', async () => {
    // A GET needs a header no cross-site simple request carries (CSRF prevention).
    const response = await fetch(`${suite.server.url}/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { 'x-graphql-yoga-csrf': '1' } });
    expect(await response.json()).toEqual({ data: { __typename: 'Query' } });
  });
});

describe.skipIf(chromiumMissing)('the reference web client in Chromium', () => {
  const browser = useBrowser('web-client');

  it('signs up, creates a project, watches a generation live, previews, diffs, restores, downloads and self-heals', async () => {
    const { page } = browser;
    const status = page.getByRole('status');
    const output = page.getByRole('log', { name: 'Model output' });
    const buildLog = page.getByRole('log', { name: 'Build log' });
    const text = async (locator: typeof status) => ((await locator.count()) > 0 ? await locator.innerText() : '');

    // The focused control: its name attribute, or a button's text.
    const focused = () =>
      page.evaluate(() => (document.activeElement?.tagName === 'BUTTON' ? document.activeElement.textContent : document.activeElement?.getAttribute('name')));
    /** Moves the focus on with Tab; it must land on `name`. */
    const tabTo = async (name: string) => {
      await page.keyboard.press('Tab');
      expect(await focused()).toBe(name);
    };

    // Sign up with the keyboard alone.
    await page.goto(suite.server.url);
    await page.getByRole('textbox', { name: 'Email' }).waitFor();
    await page.keyboard.press('Tab');
    await page.keyboard.type(uniqueEmail('e2e'));
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Tab'); // Sign in
    await tabTo('Sign up');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Projects' }).waitFor();
    await browser.screenshot('1-signed-up');

    // A project, then its page, still with the keyboard: each screen starts at its heading.
    await tabTo('name');
    await page.keyboard.type('Packing list');
    await tabTo('target');
    await page.keyboard.type('FLUTTER');
    await tabTo('Create project');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Packing list' }).waitFor();
    expect(await page.getByText('FLUTTER', { exact: true }).count()).toBe(1);
    await browser.screenshot('2-project');

    // The model's output grows while the generation is RUNNING.
    await tabTo('prompt');
    await page.keyboard.type('A packing list for a weekend trip');
    await tabTo('Generate');
    await page.keyboard.press('Enter');
    await expect.poll(async () => (await text(status)).includes('RUNNING') && (await text(output)).length > 0, { timeout: 30_000 }).toBe(true);
    const seen = (await text(output)).length;
    await expect
      .poll(async () => (await text(status)).includes('RUNNING') && (await text(output)).length > seen, { timeout: 30_000 })
      .toBe(true);
    await browser.screenshot('3-running');

    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');
    expect(await text(output)).toContain('<file path="lib/main.dart">');
    expect(await text(buildLog)).toContain('Got dependencies!');

    // The preview shows the app that was built.
    const preview = page.frameLocator('iframe[title="Preview"]');
    await expect.poll(() => text(preview.locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
    await browser.screenshot('4-succeeded');

    // A follow-up in the same session, then its diff against version 1.
    await page.getByRole('textbox', { name: 'Prompt' }).fill('Add a checkbox to mark an item as packed');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.getByRole('button', { name: 'Show version 2' }).waitFor();
    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');
    await page.getByRole('button', { name: 'Diff version 2' }).click();
    const diff = page.getByRole('region', { name: 'Changes in version 2' });
    await expect.poll(() => text(diff), { timeout: 30_000 }).toContain('MODIFIED');
    expect(await text(diff)).toContain('lib/main.dart');
    await browser.screenshot('5-diff');

    // Restore version 1: a third version, built again.
    await page.getByRole('button', { name: 'Restore version 1' }).click();
    await page.getByRole('button', { name: 'Show version 3' }).waitFor();
    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');
    await expect.poll(() => text(preview.locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
    await browser.screenshot('6-restored');

    // The ZIP of the restored version's source.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download ZIP' }).click()]);
    expect(download.suggestedFilename()).toMatch(/\.zip$/);
    const zip = await readFile(await download.path());
    expect(zip.subarray(0, 4).toString('latin1')).toBe('PK\x03\x04');
    expect(zip.includes('lib/main.dart')).toBe(true);

    // A new session whose first build fails: the model fixes it in round 1, visibly.
    await page.getByRole('button', { name: 'New session' }).click();
    await page.getByRole('textbox', { name: 'Prompt' }).fill('A reading list with a build error');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.getByRole('button', { name: 'Show version 1' }).waitFor();
    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');
    const fixes = page.getByRole('region', { name: 'Fix rounds' });
    await expect.poll(() => text(fixes), { timeout: 30_000 }).toContain('Round 1: SUCCEEDED');
    expect(await text(output)).toContain('fix round 1');
    expect(await text(buildLog)).toMatch(/analyze · fix round 1/);
    await browser.screenshot('7-fixed');

    // A reload keeps the session (refresh token in sessionStorage); sign-out forgets both tokens.
    await page.reload();
    await page.getByRole('button', { name: 'Show version 1' }).waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await page.reload();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await browser.screenshot('8-signed-out');

    expect(browser.consoleErrors).toEqual([]);
    expect(browser.escaped).toEqual([]);
  });

  it('resumes the live streams after the server closes the socket with 4403: token refreshed, nothing missed or repeated', async () => {
    const { page } = browser;
    const status = page.getByRole('status');
    const output = page.getByRole('log', { name: 'Model output' });
    const text = async (locator: typeof status) => ((await locator.count()) > 0 ? await locator.innerText() : '');
    // Every graphql-ws socket of the page passes through the test, which can close it as the server would.
    const sockets: WebSocketRoute[] = [];
    await page.routeWebSocket(/\/graphql$/, (socket) => {
      socket.connectToServer();
      sockets.push(socket);
    });

    const email = uniqueEmail('e2e-resume');
    await page.goto(suite.server.url);
    await page.getByRole('textbox', { name: 'Email' }).fill(email);
    await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up' }).click();
    await page.getByRole('textbox', { name: 'Project name' }).fill('Resume');
    await page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
    await page.getByRole('button', { name: 'Create project' }).click();
    await page.getByRole('textbox', { name: 'Prompt' }).fill('A recipe box');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect.poll(async () => (await text(status)).includes('RUNNING') && (await text(output)).length > 0, { timeout: 30_000 }).toBe(true);

    // "Token expired or revoked": the client refreshes its token, then opens a new socket.
    const refreshed = page.waitForRequest((request) => request.postData()?.includes('RefreshSession') ?? false);
    const opened = sockets.length;
    await sockets.at(-1)!.close({ code: 4403, reason: 'Forbidden' });
    await refreshed;
    await expect.poll(() => sockets.length, { timeout: 30_000 }).toBeGreaterThan(opened);
    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');

    // What the page shows is exactly what the server stored: every chunk once, in order.
    const user = await signIn(suite.server, email, PASSWORD);
    const { project } = await user.client.expectNoErrors(ProjectsDocument, { first: 1 }).then(({ projects }) => ({ project: projects.edges[0]!.node }));
    const { project: details } = await user.client.expectNoErrors(ProjectDocument, { id: project.id });
    const generation = await getGeneration(user.client, details!.generations.edges[0]!.node.id);
    expect((await output.locator('pre').textContent()) ?? '').toBe(generation.output);
    expect(browser.consoleErrors).toEqual([]);
    expect(browser.escaped).toEqual([]);
  });

  it('shows the projects, not a blank page, for a malformed project path', async () => {
    // A tab of its own: the client keeps its session in sessionStorage, one per tab.
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    try {
      await page.goto(suite.server.url);
      await page.getByRole('textbox', { name: 'Email' }).fill(uniqueEmail('e2e-malformed'));
      await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign up' }).click();
      await page.getByRole('textbox', { name: 'Project name' }).waitFor();
      // `%E0` is not UTF-8: decodeURIComponent throws on it.
      await page.goto(`${suite.server.url}/projects/%E0`);
      await page.getByRole('textbox', { name: 'Project name' }).waitFor();
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

// Two tabs that share one refresh token, as after the browser's "Duplicate tab", which copies
// sessionStorage. Refresh tokens rotate with reuse detection, so a tab that presents the token
// the other tab already spent would end the session of both: the tabs must refresh one at a
// time and hand the rotated token over (web/src/api/auth.ts). The access tokens live shorter
// than the client's early-refresh margin, so every request a page makes refreshes first.
describe.skipIf(chromiumMissing)('tabs of the web client that share a refresh token', () => {
  const tabsServer = useTestServer({ ACCESS_TOKEN_TTL_SECONDS: '20' });
  const browser = useBrowser('web-auth-tabs');
  const storedRefreshToken = (page: Page) => page.evaluate(() => sessionStorage.getItem('kiln.refreshToken'));

  /** Signs up a new user in `page`, which shows the projects afterwards (loading them refreshed the token). */
  async function signUp(page: Page, email: string) {
    await page.goto(tabsServer.url);
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
      await second.goto(tabsServer.url);
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
      const { data } = await tabsServer.client().request(RefreshSessionDocument, { refreshToken: (await storedRefreshToken(first))! });
      expect(data?.refreshSession.__typename).toBe('AuthSession');
      expect(browser.consoleErrors).toEqual([]);
      expect(secondErrors).toEqual([]);
      expect(browser.escaped).toEqual([]);
    } finally {
      await second.close();
    }
  });
});
