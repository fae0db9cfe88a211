import { join } from 'node:path';
import { execa } from 'execa';
import type { Locator, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { AddProjectMemberDocument, CancelGenerationDocument, SignOutDocument } from '../gql/graphql.js';
import { createProject, PASSWORD, signIn as signInOverApi, signUp as signUpOverApi, uniqueEmail } from '../support/fixtures.js';
import { repoRoot, startAccepted, waitForEnd } from '../support/generation-helpers.js';
import { useGenerationServer } from '../support/suite-server.js';
import { type BrowserSession, chromiumMissing, outputDir, useBrowser } from './browser.js';

// What the reference client (web/) tells its user when something is refused or goes wrong,
// and what it offers only to those who may use it: a failed answer said in words, a list
// that can be loaded again, the reason given for each field, one project or restore per click, long
// names that wrap, a reload that waits for the server, readable build-step tags, no
// controls a viewer cannot use, Cancel and Retry for a generation, and a session ended
// elsewhere that signs the tab out.

if (chromiumMissing) console.warn(`Skipping the web client feedback suite: ${chromiumMissing}.`);

const UNAVAILABLE = 'The server is unavailable; try again.';
/** What the API answers while its database cannot be reached. */
const OUTAGE = 'The database is unavailable; try again shortly.';

beforeAll(async () => {
  // The client as `npm install` builds it, from this checkout's sources (see web-client.test.ts).
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5' });

const textOf = async (locator: Locator) => ((await locator.count()) > 0 ? await locator.innerText() : '');
const shot = (page: Page, suite: string, name: string) => page.screenshot({ path: join(outputDir, suite, `${name}.png`), fullPage: true });

/** A new tab of `session` with a new user signed up in it, showing the projects. */
async function signedUpTab(session: BrowserSession, url: string, label: string) {
  const email = uniqueEmail(label);
  return { ...(await signedInTab(session, url, email, 'Sign up')), email };
}

/** A new tab of `session` in which `email` signs in (or up), showing the projects. */
async function signedInTab(session: BrowserSession, url: string, email: string, action: 'Sign in' | 'Sign up' = 'Sign in') {
  const page = await session.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(url);
  await page.getByRole('textbox', { name: 'Email' }).fill(email);
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByRole('button', { name: action }).click();
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  return { page, errors };
}

/** Counts the requests for `operation` (e.g. 'mutation CreateProject') the page sends, and those answered or failed. */
function requestsFor(page: Page, operation: string) {
  const counts = { sent: 0, settled: 0 };
  const isFor = (body: string | null) => (body ?? '').includes(operation);
  page.on('request', (request) => void (isFor(request.postData()) && counts.sent++));
  page.on('requestfinished', (request) => void (isFor(request.postData()) && counts.settled++));
  page.on('requestfailed', (request) => void (isFor(request.postData()) && counts.settled++));
  return counts;
}

/**
 * Answers the page's requests for the operations `operations` matches as the API does while its
 * database is out (DATABASE_UNAVAILABLE), for as long as the returned `outage.on` holds.
 */
async function outageOf(page: Page, operations: RegExp) {
  const outage = { on: true };
  await page.route('**/graphql', (route) => {
    if (!outage.on || !operations.test(route.request().postData() ?? '')) return route.continue();
    const errors = [{ message: OUTAGE, extensions: { code: 'DATABASE_UNAVAILABLE' } }];
    return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ data: null, errors }) });
  });
  return outage;
}

/** Whether `locator` has the focus. */
const focused = (locator: Locator) => locator.evaluate((element) => element === document.activeElement);

/** Creates a FLUTTER project from the projects page and waits for its page. */
async function newProject(page: Page, name: string) {
  await page.getByRole('textbox', { name: 'Project name' }).fill(name);
  await page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.getByRole('heading', { name, exact: true }).waitFor();
}

/** Whether a field is marked invalid, and the text it is described by (what a screen reader reads after its name). */
const fieldState = (field: Locator) =>
  field.evaluate((element) => ({
    invalid: element.getAttribute('aria-invalid') === 'true',
    description: (element.getAttribute('aria-describedby') ?? '')
      .split(' ')
      .map((id) => document.getElementById(id)?.textContent ?? '')
      .join(' ')
      .trim(),
  }));

/** A FLUTTER project named `name` with one version that succeeded, made over the API by a new user who then signs in in the page. */
async function projectWithVersion(label: string, name: string) {
  const { server } = suite;
  const owner = await signUpOverApi(server, uniqueEmail(label));
  const project = await createProject(owner.client, { name, target: 'FLUTTER' });
  const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list' });
  expect((await waitForEnd(server, owner.client, owner.accessToken, first.id)).status).toBe('SUCCEEDED');
  return { server, owner, project, first };
}

/** How far the page is wider than the window: what a reader would have to scroll sideways. */
const sidewaysOverflow = (page: Page) => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);

describe.skipIf(chromiumMissing)('the web client when a request fails', () => {
  const browser = useBrowser('web-client-feedback');

  it('says the server is unavailable, in words, for a proxy error page and for no answer at all', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-unavailable');
    try {
      await newProject(page, 'Unavailable');
      // A gateway's error page instead of the API's answer, then no answer at all.
      let failure: 'html' | 'offline' = 'html';
      await page.route('**/graphql', (route) => {
        if (!(route.request().postData() ?? '').includes('StartGeneration')) return route.continue();
        if (failure === 'offline') return route.abort('internetdisconnected');
        return route.fulfill({ status: 502, contentType: 'text/html', body: '<html><body><h1>502 Bad Gateway</h1></body></html>' });
      });
      const alert = page.getByRole('alert');
      const generate = page.getByRole('button', { name: 'Generate' });
      /** Presses Generate and waits until its request has failed: the button is busy until then. */
      const generateAndFail = async () => {
        await generate.click();
        await expect.poll(() => generate.getAttribute('aria-disabled'), { timeout: 30_000 }).toBe('false');
      };
      await page.getByRole('textbox', { name: 'Prompt' }).fill('A packing list');
      await generateAndFail();
      expect(await textOf(alert)).toBe(UNAVAILABLE);
      await shot(page, 'web-client-feedback', '1-bad-gateway');

      failure = 'offline';
      await generateAndFail();
      expect(await textOf(alert)).toBe(UNAVAILABLE);
      await shot(page, 'web-client-feedback', '2-offline');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('says why the projects could not be loaded, and loads them with Retry', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-list-failed');
    try {
      await newProject(page, 'Listed');
      let down = true;
      await page.route('**/graphql', (route) => {
        if (!down || !/query Projects\b/.test(route.request().postData() ?? '')) return route.continue();
        return route.fulfill({ status: 503, contentType: 'text/plain', body: 'Service Unavailable' });
      });
      await page.getByRole('link', { name: 'Kiln' }).click();
      const retry = page.getByRole('button', { name: 'Retry' });
      await retry.waitFor();
      expect(await textOf(page.getByRole('alert'))).toBe(`Your projects could not be loaded. ${UNAVAILABLE}`);
      expect(await page.getByText('Loading projects…').count()).toBe(0);
      // The form's own alert stays for the form: nothing was wrong with it.
      expect(await page.getByRole('alert').count()).toBe(1);
      await shot(page, 'web-client-feedback', '3-projects-failed');

      down = false;
      await retry.click();
      await page.getByRole('link', { name: 'Listed', exact: true }).waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await retry.count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('says why a project could not be loaded, and loads it with Retry', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-project-failed');
    try {
      await newProject(page, 'Unloaded');
      await page.getByRole('link', { name: 'Kiln' }).click();
      const outage = await outageOf(page, /query Project\b/);
      await page.getByRole('link', { name: 'Unloaded', exact: true }).click();
      const retry = page.getByRole('button', { name: 'Retry' });
      await retry.waitFor();
      expect(await textOf(page.getByRole('alert'))).toBe(`This project could not be loaded. ${OUTAGE}`);
      expect(await page.getByText('Loading project…').count()).toBe(0);
      await shot(page, 'web-client-feedback', '4-project-failed');

      outage.on = false;
      await retry.click();
      const heading = page.getByRole('heading', { name: 'Unloaded', exact: true });
      await heading.waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await retry.count()).toBe(0);
      // The Retry that had the focus went away: the page starts at its heading.
      await expect.poll(() => focused(heading)).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('says why the versions could not be loaded, claims nothing about them, and keeps a follow-up in its session', async () => {
    const { server, owner, first } = await projectWithVersion('e2e-versions-failed', 'Versions failed');

    const { page, errors } = await signedInTab(browser, server.url, owner.email);
    /** The session each Generate of the page continued (null: a new session). */
    const sessions: (string | null)[] = [];
    page.on('request', (request) => {
      const body = request.postData() ?? '';
      if (!body.includes('mutation StartGeneration')) return;
      sessions.push((JSON.parse(body) as { variables: { input: { sessionId: string | null } } }).variables.input.sessionId);
    });
    try {
      const outage = await outageOf(page, /query ProjectVersions\b/);
      await page.getByRole('link', { name: 'Versions failed', exact: true }).click();
      const retry = page.getByRole('button', { name: 'Retry loading the versions' });
      await retry.waitFor();
      expect(await textOf(page.getByRole('alert'))).toBe(`The versions could not be loaded. ${OUTAGE}`);
      // Neither "nothing generated" nor a new session: the list is not known.
      for (const claim of ['Nothing generated yet.', 'Starts a new session']) expect(await page.getByText(claim).count(), claim).toBe(0);
      const generate = page.getByRole('button', { name: 'Generate' });
      expect(await generate.getAttribute('aria-disabled')).toBe('true');
      await shot(page, 'web-client-feedback', '5-versions-failed');

      outage.on = false;
      await retry.click();
      await page.getByRole('button', { name: 'Show version 1' }).waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await page.getByText('Follow-up in this session (version 2)').count()).toBe(1);
      await expect.poll(() => focused(page.getByRole('heading', { name: 'Versions failed', exact: true }))).toBe(true);

      // A follow-up, after which the list fails again: the next one still continues the session.
      outage.on = true;
      const prompt = page.getByRole('textbox', { name: 'Prompt' });
      await prompt.fill('Add a checkbox');
      await generate.click();
      await retry.waitFor();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toContain('SUCCEEDED');
      await prompt.fill('Sort the items');
      await generate.click();
      await expect.poll(() => sessions.length, { timeout: 30_000 }).toBe(2);
      expect(sessions).toEqual([first.sessionId, first.sessionId]);
      await shot(page, 'web-client-feedback', '6-follow-up-without-versions');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('says why the preview and download could not be loaded once the build ended, and loads them with Retry', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-result-failed');
    try {
      await newProject(page, 'Result');
      const outage = await outageOf(page, /query Generation(Preview|Archive|Steps)\b/);
      await page.getByRole('textbox', { name: 'Prompt' }).fill('A packing list');
      await page.getByRole('button', { name: 'Generate' }).click();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toContain('SUCCEEDED');
      const retry = page.getByRole('button', { name: 'Retry loading the preview' });
      await retry.waitFor();
      expect(await textOf(page.getByRole('alert'))).toBe(`The preview and download could not be loaded. ${OUTAGE}`);
      expect(await page.getByText('No preview').count()).toBe(0);
      await shot(page, 'web-client-feedback', '7-result-failed');

      outage.on = false;
      await retry.click();
      await page.getByRole('link', { name: 'Download ZIP' }).waitFor();
      await expect.poll(() => textOf(page.frameLocator('iframe[title="Preview"]').locator('h1')), { timeout: 30_000 }).toMatch(/packing list/i);
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(await retry.count()).toBe(0);
      // The build steps came with them: each step of the log has its status.
      expect(await page.getByRole('log', { name: 'Build log' }).locator('.tag').count()).toBeGreaterThan(0);
      await expect.poll(() => focused(page.getByRole('heading', { name: 'Preview', exact: true }))).toBe(true);
      await shot(page, 'web-client-feedback', '8-result-retried');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the web client after its session was ended elsewhere', () => {
  const browser = useBrowser('web-client-revoked');

  it('signs the tab out at its next action, instead of looking signed in while every action fails', async () => {
    const { page, email, errors } = await signedUpTab(browser, suite.server.url, 'e2e-revoked');
    try {
      await newProject(page, 'Revoked');
      // The same user signs out of every session from another device.
      const elsewhere = await signInOverApi(suite.server, email);
      expect((await elsewhere.client.expectNoErrors(SignOutDocument, { scope: 'GLOBAL' })).signOut).toBe(true);

      await page.getByRole('textbox', { name: 'Prompt' }).fill('A packing list');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('button', { name: 'Sign in' }).waitFor();
      expect(await page.getByRole('button', { name: 'Sign out' }).count()).toBe(0);
      await shot(page, 'web-client-revoked', '1-signed-out');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the web client with input the server refuses', () => {
  const browser = useBrowser('web-client-fields');

  it('shows the reason for each field under it, as the field\u2019s description', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const email = page.getByRole('textbox', { name: 'Email' });
    const password = page.getByRole('textbox', { name: 'Password' });
    try {
      // An email that has an account already.
      await page.goto(suite.server.url);
      await email.fill(suite.owner.email);
      await password.fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign up' }).click();
      await page.getByRole('alert').waitFor();
      expect(await fieldState(email)).toEqual({ invalid: true, description: 'An account with this email already exists' });
      expect(await fieldState(password)).toEqual({ invalid: false, description: '' });
      expect(await page.getByText('An account with this email already exists').isVisible()).toBe(true);
      expect(await textOf(page.getByRole('alert'))).toBe('The input is not valid. Check Email.');
      await shot(page, 'web-client-fields', '1-email-taken');

      // A password longer than the server takes (the browser checks only the shortest).
      await email.fill(uniqueEmail('e2e-fields'));
      await password.fill('p'.repeat(300));
      await page.getByRole('button', { name: 'Sign up' }).click();
      await expect.poll(async () => (await fieldState(password)).invalid, { timeout: 30_000 }).toBe(true);
      expect((await fieldState(password)).description).toMatch(/too long/i);
      expect(await fieldState(email)).toEqual({ invalid: false, description: '' });
      await shot(page, 'web-client-fields', '2-password-too-long');

      // A project name of spaces: `required` lets it through, the server does not.
      await password.fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign up' }).click();
      const name = page.getByRole('textbox', { name: 'Project name' });
      await name.fill('   ');
      await page.getByRole('button', { name: 'Create project' }).click();
      await page.getByRole('alert').waitFor();
      expect(await fieldState(name)).toEqual({ invalid: true, description: 'Name must not be empty' });
      expect(await page.getByText('Name must not be empty').isVisible()).toBe(true);
      expect(await textOf(page.getByRole('alert'))).toBe('The input is not valid. Check Project name.');
      await shot(page, 'web-client-fields', '3-name-empty');

      // Fixed, the project is made and the reasons are gone.
      await name.fill('Named');
      await page.getByRole('button', { name: 'Create project' }).click();
      await page.getByRole('heading', { name: 'Named', exact: true }).waitFor();
      expect(await page.getByText('Name must not be empty').count()).toBe(0);

      // A prompt longer than the server takes.
      const prompt = page.getByRole('textbox', { name: 'Prompt' });
      await prompt.fill('p'.repeat(20_001));
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('alert').waitFor();
      expect(await fieldState(prompt)).toEqual({ invalid: true, description: 'The prompt must be at most 20000 characters' });
      expect(await textOf(page.getByRole('alert'))).toBe('The input is not valid. Check Prompt.');
      await shot(page, 'web-client-fields', '3b-prompt-too-long');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('creates one project for a double click on Create project', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-double-click');
    const creates = requestsFor(page, 'mutation CreateProject');
    try {
      await page.getByRole('textbox', { name: 'Project name' }).fill('Once');
      await page.getByRole('button', { name: 'Create project' }).dblclick();
      await page.getByRole('heading', { name: 'Once', exact: true }).waitFor();
      await expect.poll(() => creates.settled === creates.sent, { timeout: 30_000 }).toBe(true);
      await page.getByRole('link', { name: 'Kiln' }).click();
      await page.getByRole('list', { name: 'Your projects' }).waitFor();
      expect(await page.getByRole('link', { name: 'Once', exact: true }).count()).toBe(1);
      await shot(page, 'web-client-fields', '4-one-project');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('restores once for a double click on Restore', async () => {
    // Two versions of one session.
    const { server, owner, project, first } = await projectWithVersion('e2e-restore', 'Restored once');
    const second = await startAccepted(owner.client, { projectId: project.id, prompt: 'Add a checkbox', sessionId: first.sessionId });
    expect((await waitForEnd(server, owner.client, owner.accessToken, second.id)).status).toBe('SUCCEEDED');

    const { page, errors } = await signedInTab(browser, server.url, owner.email);
    const restores = requestsFor(page, 'mutation RestoreGeneration');
    try {
      await page.getByRole('link', { name: 'Restored once', exact: true }).click();
      await page.getByRole('button', { name: 'Restore version 1' }).dblclick();
      await page.getByRole('button', { name: 'Show version 3' }).waitFor();
      await expect.poll(() => restores.settled === restores.sent, { timeout: 30_000 }).toBe(true);
      expect(restores.sent).toBe(1);
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 30_000 }).toContain('SUCCEEDED');
      expect(await page.getByRole('button', { name: 'Show version 4' }).count()).toBe(0);
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('wraps a long unbroken name and prompt instead of widening the page', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-long-words');
    try {
      await page.setViewportSize({ width: 390, height: 1600 });
      const name = 'W'.repeat(100);
      await newProject(page, name);
      expect(await sidewaysOverflow(page)).toBeLessThanOrEqual(0);

      await page.getByRole('textbox', { name: 'Prompt' }).fill(`A packing list for ${'x'.repeat(300)}`);
      await page.getByRole('button', { name: 'Generate' }).click();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toMatch(/SUCCEEDED|FAILED/);
      await page.getByText(`A packing list for ${'x'.repeat(300)}`).first().waitFor();
      expect(await sidewaysOverflow(page)).toBeLessThanOrEqual(0);
      await shot(page, 'web-client-fields', '5-long-project');

      await page.getByRole('link', { name: 'Kiln' }).click();
      await page.getByRole('link', { name, exact: true }).waitFor();
      expect(await sidewaysOverflow(page)).toBeLessThanOrEqual(0);
      await shot(page, 'web-client-fields', '6-long-name-listed');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the web client reloaded while the server cannot be reached', () => {
  const browser = useBrowser('web-client-unreachable');

  it('keeps loading with a notice, tries again, and is signed in once the server answers', async () => {
    const { page, email, errors } = await signedUpTab(browser, suite.server.url, 'e2e-unreachable');
    // Every refresh fails as a refused connection does, until `reachable`.
    let reachable = false;
    let refused = 0;
    await page.route('**/graphql', (route) => {
      if (reachable || !(route.request().postData() ?? '').includes('RefreshSession')) return route.continue();
      refused++;
      return route.abort('connectionrefused');
    });
    try {
      await page.reload();
      const signInButton = page.getByRole('button', { name: 'Sign in' });
      const notice = page.getByText("Can't reach the server, retrying…");
      await notice.or(signInButton).waitFor();
      expect(await notice.isVisible()).toBe(true);
      // It tries again by itself, and still says so instead of asking to sign in.
      await expect.poll(() => refused, { timeout: 30_000 }).toBeGreaterThan(1);
      expect(await notice.isVisible()).toBe(true);
      expect(await signInButton.count()).toBe(0);
      await shot(page, 'web-client-unreachable', '1-retrying');

      reachable = true;
      await page.getByRole('heading', { name: 'Projects' }).or(signInButton).waitFor({ timeout: 60_000 });
      expect(await page.locator('.who').textContent()).toBe(email);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

/** The contrast ratio (WCAG 2) of each element's text against the first opaque background behind it. */
const contrasts = (elements: Locator) =>
  elements.evaluateAll((nodes) => {
    const rgb = (color: string) => (color.match(/[\d.]+/g) ?? []).map(Number);
    const luminance = ([r, g, b]: number[]) => {
      const channel = (value: number) => {
        const c = value / 255;
        return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * channel(r!) + 0.7152 * channel(g!) + 0.0722 * channel(b!);
    };
    return nodes.map((node) => {
      let behind: Element | null = node;
      let background = 'rgb(255, 255, 255)';
      for (; behind; behind = behind.parentElement) {
        const color = getComputedStyle(behind).backgroundColor;
        if ((rgb(color)[3] ?? 1) > 0) {
          background = color;
          break;
        }
      }
      const [light, dark] = [luminance(rgb(getComputedStyle(node).color)), luminance(rgb(background))].sort((a, b) => b - a);
      return { text: (node.textContent ?? '').trim(), ratio: Math.round(((light! + 0.05) / (dark! + 0.05)) * 100) / 100 };
    });
  });

describe.skipIf(chromiumMissing)('the build log of the web client', () => {
  const browser = useBrowser('web-client-contrast');

  it('shows FAILED and SUCCEEDED step tags, and every other tag, at a contrast of at least 4.5:1', async () => {
    const { page, errors } = await signedUpTab(browser, suite.server.url, 'e2e-contrast');
    try {
      await newProject(page, 'Contrast');
      await page.getByRole('textbox', { name: 'Prompt' }).fill('A reading list with a build error');
      await page.getByRole('button', { name: 'Generate' }).click();
      await expect.poll(() => textOf(page.getByRole('region', { name: 'Fix rounds' })), { timeout: 60_000 }).toContain('Round 1: SUCCEEDED');
      const stepTags = page.getByRole('log', { name: 'Build log' }).locator('.tag');
      await expect.poll(async () => (await stepTags.allInnerTexts()).join(' '), { timeout: 30_000 }).toMatch(/FAILED[\s\S]*SUCCEEDED/);
      const low = (await contrasts(page.locator('.tag'))).filter(({ ratio }) => ratio < 4.5);
      expect(low).toEqual([]);
      await page.getByRole('log', { name: 'Build log' }).screenshot({ path: join(outputDir, 'web-client-contrast', '1-step-tags.png') });
      await shot(page, 'web-client-contrast', '2-page');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('a viewer of a project in the web client', () => {
  const browser = useBrowser('web-client-viewer');

  it('sees the versions, but no Generate, Restore, Cancel or Retry', async () => {
    // The owner makes two versions of one session over the API, the second cancelled (where an
    // editor would see Retry), and shares the project with a viewer.
    const { owner, server } = suite;
    const project = await createProject(owner.client, { name: 'Shared', target: 'FLUTTER' });
    const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list' });
    await waitForEnd(server, owner.client, owner.accessToken, first.id);
    const second = await startAccepted(owner.client, { projectId: project.id, prompt: 'Add a checkbox', sessionId: first.sessionId });
    expect((await owner.client.expectNoErrors(CancelGenerationDocument, { id: second.id })).cancelGeneration.__typename).toBe('Generation');
    expect((await waitForEnd(server, owner.client, owner.accessToken, second.id)).status).toBe('CANCELLED');
    const viewer = await signUpOverApi(server, uniqueEmail('e2e-viewer'));
    const { addProjectMember } = await owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: project.id, email: viewer.email, role: 'VIEWER' },
    });
    expect(addProjectMember.__typename).toBe('ProjectMember');

    const { page, errors } = await signedInTab(browser, server.url, viewer.email);
    try {
      await page.getByRole('link', { name: 'Shared', exact: true }).click();
      await page.getByRole('button', { name: 'Show version 2' }).waitFor();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 30_000 }).toContain('CANCELLED');
      for (const name of ['Generate', 'Restore version 1', 'Cancel', 'Retry', 'New session']) {
        expect(await page.getByRole('button', { name, exact: true }).count(), name).toBe(0);
      }
      expect(await page.getByRole('textbox', { name: 'Prompt' }).count()).toBe(0);
      expect(await page.getByText('You can view this project.').isVisible()).toBe(true);
      // What a viewer may do stays: look at a diff.
      await page.getByRole('button', { name: 'Diff version 2' }).click();
      await page.getByRole('region', { name: 'Changes in version 2' }).waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      await shot(page, 'web-client-viewer', '1-viewer');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('cancelling and retrying a generation in the web client', () => {
  // Builds that never end by themselves: a generation stays RUNNING until it is cancelled.
  const hanging = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5' }, 'hang');
  const browser = useBrowser('web-client-cancel');

  it('cancels a running generation, keeps the focus on the button, and retries it as a new version that has the focus', async () => {
    const { page, errors } = await signedUpTab(browser, hanging.server.url, 'e2e-cancel');
    const status = page.getByRole('status');
    /** The focused control's text. */
    const focused = () => page.evaluate(() => document.activeElement?.textContent ?? '');
    try {
      await newProject(page, 'Cancel');
      await page.getByRole('textbox', { name: 'Prompt' }).fill('A packing list');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('button', { name: 'Show version 1' }).waitFor();
      await expect.poll(() => textOf(status), { timeout: 30_000 }).toContain('RUNNING');
      expect(await page.getByRole('button', { name: 'Retry' }).count()).toBe(0);

      await page.getByRole('button', { name: 'Cancel', exact: true }).click();
      await expect.poll(() => textOf(status), { timeout: 30_000 }).toContain('CANCELLED');
      const retry = page.getByRole('button', { name: 'Retry' });
      await retry.waitFor();
      expect(await page.getByRole('button', { name: 'Cancel', exact: true }).count()).toBe(0);
      expect(await focused()).toBe('Retry');
      await shot(page, 'web-client-cancel', '1-cancelled');

      await retry.click();
      await page.getByRole('button', { name: 'Show version 2' }).waitFor();
      await expect.poll(() => textOf(status), { timeout: 30_000 }).toMatch(/QUEUED|RUNNING/);
      // The version Retry opened has the focus on its own Cancel, not on the page.
      await expect.poll(focused, { timeout: 30_000 }).toBe('Cancel');
      expect(await textOf(page.locator('.prompt-echo'))).toBe('“A packing list”');
      await shot(page, 'web-client-cancel', '2-retried');

      // The retry hangs as well: cancel it too, so nothing is left running.
      await page.getByRole('button', { name: 'Cancel', exact: true }).click();
      await expect.poll(() => textOf(status), { timeout: 30_000 }).toContain('CANCELLED');
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('shows the new status of a version that ends while another one is shown', async () => {
    // Version 1 cancelled, version 2 left running, over the API; the user signs in in the page.
    const { server } = hanging;
    const owner = await signUpOverApi(server, uniqueEmail('e2e-stale-tag'));
    const project = await createProject(owner.client, { name: 'Tags', target: 'FLUTTER' });
    const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list' });
    expect((await owner.client.expectNoErrors(CancelGenerationDocument, { id: first.id })).cancelGeneration.__typename).toBe('Generation');
    expect((await waitForEnd(server, owner.client, owner.accessToken, first.id)).status).toBe('CANCELLED');
    const second = await startAccepted(owner.client, { projectId: project.id, prompt: 'Add a checkbox', sessionId: first.sessionId });

    const { page, errors } = await signedInTab(browser, server.url, owner.email);
    const tagOf = (label: string) => textOf(page.getByRole('listitem').filter({ has: page.getByRole('button', { name: `Show ${label}` }) }).locator('.tag'));
    try {
      await page.getByRole('link', { name: 'Tags', exact: true }).click();
      await page.getByRole('button', { name: 'Show version 1' }).click();
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 30_000 }).toContain('CANCELLED');
      expect(await tagOf('version 2')).toMatch(/QUEUED|RUNNING/);

      // Version 2 ends while version 1 is shown.
      expect((await owner.client.expectNoErrors(CancelGenerationDocument, { id: second.id })).cancelGeneration.__typename).toBe('Generation');
      expect((await waitForEnd(server, owner.client, owner.accessToken, second.id)).status).toBe('CANCELLED');
      await expect.poll(() => tagOf('version 2'), { timeout: 30_000 }).toBe('CANCELLED');
      expect(await textOf(page.getByRole('status'))).toContain('CANCELLED');
      await shot(page, 'web-client-cancel', '3-tag-followed');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
