import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Locator, Page, WebSocketRoute } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { offlineApp } from '../../src/llm/offline.js';
import { ProjectDocument, ProjectsDocument, RefreshSessionDocument } from '../gql/graphql.js';
import { type FakeGemini, type GeminiBehaviour, heldAnswer, piecesOf } from '../support/fake-gemini.js';
import { signIn, uniqueEmail } from '../support/fixtures.js';
import { useGeminiServer } from '../support/gemini-server.js';
import { getGeneration, repoRoot } from '../support/generation-helpers.js';
import { type TestServer, useTestServer } from '../support/server.js';
import { useGenerationServer } from '../support/suite-server.js';
import { type BrowserSession, chromiumMissing, openBrowser, outputDir, useBrowser } from './browser.js';

// The reference client (web/) in Chromium, served by Kiln at `/`, found by the accessible
// names that are part of the contract. FLUTTER with the fake flutter (the WEB target's
// real build needs the npm registry) and the offline provider. The cases that act while a
// generation still streams have the offline provider's answers sent by a fake Gemini instead,
// held at a gate until the page has shown what came so far, however slow the machine is.

if (chromiumMissing) console.warn(`Skipping the web client browser suite: ${chromiumMissing}.`);

const PASSWORD = 'correct horse battery staple';

beforeAll(async () => {
  // The client as `npm install` builds it (prepare → build:web), from this checkout's sources;
  // without the test runner's NODE_ENV, which would make a development build.
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
const suite = useGenerationServer();

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

/**
 * For the fake Gemini: the offline provider's answer to `prompt` in a FLUTTER project (a first
 * answer, a follow-up's, or a fix round's), in `count` pieces. The apps, their previews and
 * their build errors and fixes are then the offline provider's.
 */
function offlineAnswer(prompt: string, { followUp = false, round = 0, count = 8 } = {}): Extract<GeminiBehaviour, { kind: 'stream' }> {
  return { kind: 'stream', chunks: piecesOf(offlineApp('FLUTTER', prompt, followUp, round), count) };
}

/**
 * Scripts the next answer of `gemini`, the offline provider's to `prompt`, held at a gate
 * (heldAnswer: any later request gets it ungated): the case lets it out a piece at a time while
 * it acts, then opens the gate. Kiln batches the model's text before it publishes it, so
 * `showNext` waits for the page to show the text, not for a number of chunks. The gate also
 * opens when the test ends, whatever happened: a held answer would hold the suite's one worker.
 */
function holdOfflineAnswer(gemini: FakeGemini, prompt: string) {
  const { gate, pieces, behaviours } = heldAnswer(offlineAnswer(prompt).chunks);
  gemini.script(...behaviours);
  let out = 0;
  /** Lets the next piece out, without waiting for it. */
  const releaseNext = () => {
    out++;
    expect(out, 'the last piece ends the answer: the case would no longer act mid-stream').toBeLessThan(pieces.length);
    gate.release();
  };
  return {
    releaseNext,
    /** Lets the next `count` pieces out, one at a time, each once `page` shows everything let out so far (once, in order). */
    async showNext(page: Page, count = 1) {
      for (let i = 0; i < count; i++) {
        releaseNext();
        await expect.poll(() => shownOutput(page), { timeout: 30_000 }).toBe(pieces.slice(0, out).join(''));
      }
    },
    /** Lets the rest of the answer out. */
    open: () => gate.open(),
  };
}

/** What a generation's status says while the model's answer streams (a build later is RUNNING too). */
const STREAMING = 'RUNNING · phase GENERATING';

// The journeys that watch a generation while it streams: each answer of the fake model is the
// offline provider's (the same apps, previews and fix rounds), and the first one of each case
// waits at a gate until the case has seen what it needs while the generation still runs.
describe.skipIf(chromiumMissing)('the reference web client in Chromium, with answers held mid-stream', () => {
  const live = useGeminiServer();
  const browser = useBrowser('web-client');

  it('signs up, creates a project, watches a generation live, previews, diffs, restores, downloads and self-heals', async () => {
    const { page } = browser;
    const prompt = 'A packing list for a weekend trip';
    const answer = holdOfflineAnswer(live.gemini, prompt);
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
    await page.goto(live.server.url);
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

    // The model's output grows while the generation is RUNNING: the answer goes on a piece at a time.
    await tabTo('prompt');
    await page.keyboard.type(prompt);
    await tabTo('Generate');
    await page.keyboard.press('Enter');
    await answer.showNext(page);
    await expect.poll(() => text(status), { timeout: 30_000 }).toContain(STREAMING);
    const seen = (await text(output)).length;
    expect(seen).toBeGreaterThan(0);
    await answer.showNext(page);
    expect(await text(status)).toContain(STREAMING);
    expect((await text(output)).length).toBeGreaterThan(seen);
    await browser.screenshot('3-running');
    answer.open();

    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');
    expect(await text(output)).toContain('<file path="lib/main.dart">');
    expect(await text(buildLog)).toContain('Got dependencies!');

    // The preview shows the app that was built.
    const preview = page.frameLocator('iframe[title="Preview"]');
    await expect.poll(() => text(preview.locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
    await browser.screenshot('4-succeeded');

    // A follow-up in the same session, then its diff against version 1.
    live.gemini.script(offlineAnswer('Add a checkbox to mark an item as packed', { followUp: true }));
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
    live.gemini.script(offlineAnswer('A reading list with a build error'), offlineAnswer('A reading list with a build error', { round: 1 }));
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
    const answer = holdOfflineAnswer(live.gemini, 'A recipe box');
    await page.goto(live.server.url);
    await page.getByRole('textbox', { name: 'Email' }).fill(email);
    await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up' }).click();
    await startApp(page, 'Resume', 'A recipe box');
    await answer.showNext(page, 2);
    await expect.poll(() => text(status), { timeout: 30_000 }).toContain(STREAMING);

    // "Token expired or revoked": the client refreshes its token, then opens a new socket.
    const refreshed = page.waitForRequest((request) => request.postData()?.includes('RefreshSession') ?? false);
    const opened = sockets.length;
    await sockets.at(-1)!.close({ code: 4403, reason: 'Forbidden' });
    // The model goes on while the page is away: stored before or after it subscribes again, this piece comes once.
    answer.releaseNext();
    await refreshed;
    await expect.poll(() => sockets.length, { timeout: 30_000 }).toBeGreaterThan(opened);
    // Back while the answer still streams: what came meanwhile, then the next piece live, each once, in order.
    await answer.showNext(page);
    expect(await text(status)).toContain(STREAMING);
    answer.open();
    await expect.poll(() => text(status), { timeout: 60_000 }).toContain('SUCCEEDED');

    // What the page shows is exactly what the server stored: every chunk once, in order.
    const user = await signIn(live.server, email, PASSWORD);
    const { project } = await user.client.expectNoErrors(ProjectsDocument, { first: 1 }).then(({ projects }) => ({ project: projects.edges[0]!.node }));
    const { project: details } = await user.client.expectNoErrors(ProjectDocument, { id: project.id });
    const generation = await getGeneration(user.client, details!.generations.edges[0]!.node.id);
    expect((await output.locator('pre').textContent()) ?? '').toBe(generation.output);
    expect(browser.consoleErrors).toEqual([]);
    expect(browser.escaped).toEqual([]);
  });

  it('resumes a stream the server ended with DATABASE_UNAVAILABLE from its last seq, with no error left on the page', async () => {
    const { page, email, errors } = await signedUpTab(browser, live.server.url, 'e2e-db-outage');
    // The third chunk of the first chunk stream is replaced by the last result the server sends
    // when the database stayed unreachable (src/api/stream-errors.ts), then the stream ends.
    let injected = false;
    await page.routeWebSocket(/\/graphql$/, (socket) => {
      const server = socket.connectToServer();
      const chunkStreams = new Map<string, number>();
      const ended = new Set<string>();
      socket.onMessage((message) => {
        const { type, id, payload } = JSON.parse(String(message)) as { type: string; id: string; payload?: { query: string } };
        if (type === 'subscribe' && payload!.query.includes('generationChunks')) chunkStreams.set(id, 0);
        server.send(message);
      });
      server.onMessage((message) => {
        const { type, id } = JSON.parse(String(message)) as { type: string; id: string };
        if (ended.has(id)) return;
        if (type === 'next' && chunkStreams.has(id) && !injected) {
          const count = chunkStreams.get(id)! + 1;
          chunkStreams.set(id, count);
          if (count === 3) {
            injected = true;
            ended.add(id);
            server.send(JSON.stringify({ id, type: 'complete' }));
            const errors = [{ message: 'The database is unreachable for the moment; try again shortly.', extensions: { code: 'DATABASE_UNAVAILABLE' } }];
            socket.send(JSON.stringify({ id, type: 'next', payload: { data: null, errors } }));
            socket.send(JSON.stringify({ id, type: 'complete' }));
            return;
          }
        }
        socket.send(message);
      });
    });
    try {
      const answer = holdOfflineAnswer(live.gemini, 'A recipe box');
      await startApp(page, 'Outage', 'A recipe box');
      // A piece at a time until the third result was replaced, which the page shows once resumed.
      while (!injected) await answer.showNext(page);
      // Resumed while the answer still streams: the next piece comes live, once.
      await answer.showNext(page);
      expect(await textOf(page.getByRole('status'))).toContain(STREAMING);
      answer.open();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toContain('SUCCEEDED');
      const stored = await storedOutput(live.server, email);
      await expect.poll(() => shownOutput(page), { timeout: 30_000 }).toBe(stored);
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await textOf(page.getByRole('status'))).not.toContain('Reconnecting');
      await shot(page, 'web-client', 'resumed-after-db-outage');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('keeps the output a reader selected while more of it streams in', async () => {
    const { page, errors } = await signedUpTab(browser, live.server.url, 'e2e-select');
    const status = page.getByRole('status');
    try {
      const answer = holdOfflineAnswer(live.gemini, 'A recipe box');
      await startApp(page, 'Select', 'A recipe box');
      while ((await shownOutput(page)).length <= 20) await answer.showNext(page);
      await expect.poll(() => textOf(status), { timeout: 30_000 }).toContain(STREAMING);
      // Select the first characters of the output, as a reader dragging over them would.
      const selected = await page.evaluate(() => {
        const pre = document.querySelector('[aria-label="Model output"] pre')!;
        const text = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT).nextNode()!;
        getSelection()!.setBaseAndExtent(text, 0, text, Math.min(20, text.textContent!.length));
        return getSelection()!.toString();
      });
      expect(selected.length).toBeGreaterThan(0);
      const seen = (await shownOutput(page)).length;
      await answer.showNext(page);
      expect(await textOf(status)).toContain(STREAMING);
      expect((await shownOutput(page)).length).toBeGreaterThan(seen);
      expect(await page.evaluate(() => getSelection()!.toString())).toBe(selected);
      await shot(page, 'web-client', 'selection-kept');
      answer.open();
      await expect.poll(() => textOf(status), { timeout: 60_000 }).toContain('SUCCEEDED');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the reference web client in Chromium', () => {
  const browser = useBrowser('web-client-paths');

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
      // Both tokens are read at every try: either tab may take the other's last rotation (a BroadcastChannel message) a moment later.
      await expect.poll(async () => [await storedRefreshToken(first), await storedRefreshToken(second)]).toSatisfy(([a, b]: (string | null)[]) => a !== null && a === b);
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

// What the client does when things go wrong: a socket that cannot connect, signed URLs that
// expired, a refresh refused for a while (a stream ended by the server is above, held
// mid-stream); and where the keyboard focus goes. Each test opens a tab of its own (one
// session per tab).

/** A new tab of `session` with a new user signed up in it, showing the projects. */
async function signedUpTab(session: BrowserSession, url: string, label: string) {
  const page = await session.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  const email = uniqueEmail(label);
  await page.goto(url);
  await page.getByRole('textbox', { name: 'Email' }).fill(email);
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  return { page, email, errors };
}

/** Creates a FLUTTER project from the projects page and starts generating `prompt` in it. */
async function startApp(page: Page, project: string, prompt: string) {
  await page.getByRole('textbox', { name: 'Project name' }).fill(project);
  await page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.getByRole('textbox', { name: 'Prompt' }).fill(prompt);
  await page.getByRole('button', { name: 'Generate' }).click();
}

/** Creates a FLUTTER project, generates `prompt` in it and waits until the generation succeeded. */
async function generateApp(page: Page, project: string, prompt: string) {
  await startApp(page, project, prompt);
  await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toContain('SUCCEEDED');
}

const textOf = async (locator: Locator) => ((await locator.count()) > 0 ? await locator.innerText() : '');

/** What the page shows as the model's output, exactly. */
const shownOutput = (page: Page) => page.getByRole('log', { name: 'Model output' }).locator('pre').textContent().then((text) => text ?? '');

/** The user's latest generation as the server stored it. */
async function latestGeneration(server: TestServer, email: string) {
  const user = await signIn(server, email, PASSWORD);
  const { projects } = await user.client.expectNoErrors(ProjectsDocument, { first: 1 });
  const { project } = await user.client.expectNoErrors(ProjectDocument, { id: projects.edges[0]!.node.id });
  return getGeneration(user.client, project!.generations.edges[0]!.node.id);
}

/** The output the server stored for the user's latest generation. */
const storedOutput = async (server: TestServer, email: string) => (await latestGeneration(server, email)).output;

const shot = (page: Page, suite: string, name: string) => page.screenshot({ path: join(outputDir, suite, `${name}.png`), fullPage: true });

describe.skipIf(chromiumMissing)('the web client when a stream or the socket fails', () => {
  const browser = useBrowser('web-client-failures');

  it('says it is reconnecting when the WebSocket cannot connect, and shows a finished version over HTTP', async () => {
    const { page, email, errors } = await signedUpTab(browser, suite.server.url, 'e2e-no-socket');
    try {
      await generateApp(page, 'No socket', 'A packing list');
      // From now on every socket is closed as a proxy without WebSocket support would.
      let attempts = 0;
      await page.routeWebSocket(/\/graphql$/, (socket) => {
        attempts++;
        void socket.close({ code: 1011, reason: 'upstream' });
      });
      await page.reload();
      await page.getByText('Reconnecting… (upstream)').waitFor({ timeout: 30_000 });
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 30_000 }).toContain('SUCCEEDED');
      await expect.poll(() => shownOutput(page), { timeout: 30_000 }).toBe(await storedOutput(suite.server, email));
      await expect.poll(() => textOf(page.frameLocator('iframe[title="Preview"]').locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
      await page.getByRole('link', { name: 'Download ZIP' }).waitFor();
      expect(attempts).toBeGreaterThan(1);
      await shot(page, 'web-client-failures', '2-no-socket');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('signed URLs of the web client after they expired', () => {
  // Preview and archive URLs that live 3 s: the test waits until the server refuses them.
  const shortLived = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5', SIGNED_URL_TTL_SECONDS: '3' });
  const browser = useBrowser('web-client-expiry');

  it('downloads the ZIP and reloads the preview with fresh URLs', async () => {
    const { page, errors } = await signedUpTab(browser, shortLived.server.url, 'e2e-expiry');
    try {
      await generateApp(page, 'Expiry', 'A packing list');
      const preview = page.frameLocator('iframe[title="Preview"]');
      await expect.poll(() => textOf(preview.locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
      const previewUrl = (await page.locator('iframe[title="Preview"]').getAttribute('src'))!;
      const archiveUrl = (await page.getByRole('link', { name: 'Download ZIP' }).getAttribute('href'))!;
      const statusOf = async (url: string) => (await fetch(new URL(url, shortLived.server.url))).status;
      await expect.poll(() => statusOf(previewUrl), { timeout: 30_000 }).toBe(410);
      await expect.poll(() => statusOf(archiveUrl), { timeout: 30_000 }).toBe(410);

      // A reload inside the preview, as its own navigation would do.
      const frame = (await (await page.locator('iframe[title="Preview"]').elementHandle())!.contentFrame())!;
      await frame.evaluate(() => location.reload()).catch(() => {});
      await expect.poll(() => page.locator('iframe[title="Preview"]').getAttribute('src'), { timeout: 30_000 }).not.toBe(previewUrl);
      await expect.poll(() => textOf(preview.locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
      await shot(page, 'web-client-expiry', '1-preview-reloaded');

      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download ZIP' }).click()]);
      expect(await download.failure()).toBeNull();
      const zip = await readFile(await download.path());
      expect(zip.subarray(0, 4).toString('latin1')).toBe('PK\x03\x04');
      expect(zip.includes('lib/main.dart')).toBe(true);
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('keyboard focus and feedback in the web client', () => {
  const browser = useBrowser('web-client-focus');

  it('keeps the focus on a lasting control, says why a prompt is refused, and lets modified clicks open tabs', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    /** The focused control: its accessible label, a button's text, or a field's name. */
    const focused = () =>
      page.evaluate(() => {
        const element = document.activeElement;
        if (!element || element === document.body) return 'body';
        return element.getAttribute('aria-label') ?? (element.tagName === 'BUTTON' ? element.textContent : element.getAttribute('name'));
      });
    try {
      // A failed sign-in leaves the focus on the button pressed.
      await page.goto(suite.server.url);
      await page.getByRole('textbox', { name: 'Email' }).fill(uniqueEmail('e2e-focus-unknown'));
      await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).press('Enter');
      await page.getByRole('alert').waitFor();
      expect(await focused()).toBe('Sign in');
      await shot(page, 'web-client-focus', '1-sign-in-failed');

      const email = uniqueEmail('e2e-focus');
      await page.getByRole('textbox', { name: 'Email' }).fill(email);
      await page.getByRole('button', { name: 'Sign up' }).click();
      await page.getByRole('textbox', { name: 'Project name' }).fill('Focus');
      await page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
      await page.getByRole('button', { name: 'Create project' }).click();

      // A prompt of spaces is refused with a reason.
      await page.getByRole('textbox', { name: 'Prompt' }).fill('   ');
      await page.getByRole('button', { name: 'Generate' }).click();
      await expect.poll(() => textOf(page.getByRole('alert'))).toContain('Write a prompt first');
      await shot(page, 'web-client-focus', '2-blank-prompt');

      // Generate keeps the focus while the request runs and after it; the prompt goes as written, indentation and all.
      const prompt = 'A packing list, like this:\n    - socks\n    - a hat\n';
      await page.getByRole('textbox', { name: 'Prompt' }).fill(prompt);
      await page.getByRole('button', { name: 'Generate' }).press('Enter');
      await page.getByRole('button', { name: 'Show version 1' }).waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await focused()).toBe('Generate');
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toContain('SUCCEEDED');
      expect((await latestGeneration(suite.server, email)).prompt).toBe(prompt);

      // Closing a diff returns to the button that opened it.
      await page.getByRole('button', { name: 'Diff version 1' }).click();
      await page.getByRole('region', { name: 'Changes in version 1' }).waitFor();
      await page.getByRole('button', { name: 'Close diff' }).press('Enter');
      await page.getByRole('region', { name: 'Changes in version 1' }).waitFor({ state: 'detached' });
      expect(await focused()).toBe('Diff version 1');
      await shot(page, 'web-client-focus', '3-diff-closed');

      // "New session" goes away with the session: the focus moves to the prompt.
      await page.getByRole('button', { name: 'New session' }).press('Enter');
      await page.getByText('Starts a new session').waitFor();
      expect(await focused()).toBe('prompt');

      // Ctrl+click on a project opens it in a new tab and leaves this one on the projects.
      await page.getByRole('link', { name: 'Kiln' }).click();
      const [opened] = await Promise.all([
        browser.context.waitForEvent('page', { timeout: 10_000 }),
        page.getByRole('link', { name: 'Focus', exact: true }).click({ modifiers: ['ControlOrMeta'] }),
      ]);
      await opened.waitForURL(/\/projects\//);
      await opened.close();
      expect(new URL(page.url()).pathname).toBe('/');
      await page.getByRole('heading', { name: 'Projects' }).waitFor();
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the session of the web client when a refresh cannot be done now', () => {
  // Access tokens shorter than the client's early-refresh margin: every request refreshes first.
  const server = useTestServer({ ACCESS_TOKEN_TTL_SECONDS: '20' });
  const browser = useBrowser('web-client-refresh');

  it('keeps the session when a refresh is rate limited, and tries again when the server allows', async () => {
    const { page, email, errors } = await signedUpTab(browser, server.url, 'e2e-rate-limited');
    // Every refresh is refused as Supabase's 429 becomes until the screenshot is taken. Every one,
    // not the next: a refresh the page made before its reload may reach the route first.
    let rateLimited = true;
    await page.route('**/graphql', async (route) => {
      if (!rateLimited || !(route.request().postData() ?? '').includes('RefreshSession')) return route.continue();
      const refreshSession = { __typename: 'RateLimitedError', message: 'Too many requests; try again in 1 second.', retryAfterSeconds: 1 };
      return route.fulfill({ contentType: 'application/json', body: JSON.stringify({ data: { refreshSession } }) });
    });
    try {
      await page.reload();
      const signInButton = page.getByRole('button', { name: 'Sign in' });
      const waiting = page.getByText('Too many requests; try again in 1 second.', { exact: false });
      await waiting.or(signInButton).waitFor();
      expect(await waiting.isVisible()).toBe(true);
      await shot(page, 'web-client-refresh', '1-rate-limited');
      rateLimited = false;
      await page.getByRole('heading', { name: 'Projects' }).or(signInButton).waitFor({ timeout: 30_000 });
      expect(await page.locator('.who').textContent()).toBe(email);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('hands the new pair to a copy of a tab reopened long after the other spent its token', async () => {
    // A browser of its own with Playwright's clock: "a long time" passes as when a laptop lid is opened again.
    const session = await openBrowser('web-client-reopen');
    try {
      await session.context.clock.install();
      const { page: first, email } = await signedUpTab(session, server.url, 'e2e-reopen');
      const copied = await first.evaluate(() => Object.fromEntries(Object.entries(sessionStorage)));
      const spentToken = copied['kiln.refreshToken']!;
      // Creating a project refreshes first, which spends the token the copy keeps.
      await first.getByRole('textbox', { name: 'Project name' }).fill('Before');
      await first.getByRole('button', { name: 'Create project' }).click();
      await first.getByRole('heading', { name: 'Before', exact: true }).waitFor();
      await first.getByRole('link', { name: 'Kiln' }).click();
      await first.clock.fastForward('30:00');

      // "Reopen closed tab": a copy of the first tab's sessionStorage, from before the refresh.
      const reopened = await session.context.newPage();
      const presented: string[] = [];
      reopened.on('request', (request) => {
        const body = request.postData() ?? '';
        if (body.includes('RefreshSession')) presented.push((JSON.parse(body) as { variables: { refreshToken: string } }).variables.refreshToken);
      });
      await reopened.addInitScript((entries: Record<string, string>) => {
        if (sessionStorage.length === 0) for (const [key, value] of Object.entries(entries)) sessionStorage.setItem(key, value);
      }, copied);
      await reopened.goto(server.url);
      const signedOut = reopened.getByRole('button', { name: 'Sign in' });
      await reopened.getByRole('link', { name: 'Before', exact: true }).or(signedOut).waitFor();
      expect(await reopened.getByRole('link', { name: 'Before', exact: true }).isVisible()).toBe(true);
      // It asked the first tab instead of presenting the spent token, which reuse detection would punish.
      expect(presented).not.toContain(spentToken);
      await reopened.screenshot({ path: join(outputDir, 'web-client-reopen', 'reopened-tab.png'), fullPage: true });

      // And the first tab goes on.
      await first.getByRole('textbox', { name: 'Project name' }).fill('After');
      await first.getByRole('button', { name: 'Create project' }).click();
      await first.getByRole('heading', { name: 'After', exact: true }).or(first.getByRole('button', { name: 'Sign in' })).waitFor();
      expect(await first.getByRole('heading', { name: 'After', exact: true }).isVisible()).toBe(true);
      expect(await first.locator('.who').textContent()).toBe(email);
      expect(session.consoleErrors).toEqual([]);
      expect(session.escaped).toEqual([]);
    } finally {
      await session.close();
    }
  });
});
