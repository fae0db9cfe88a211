import { join } from 'node:path';
import { execa } from 'execa';
import type { Locator, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { AddProjectMemberDocument, CancelGenerationDocument, RemoveProjectMemberDocument, SignOutDocument } from '../gql/graphql.js';
import { createProject, PASSWORD, signIn as signInOverApi, signUp as signUpOverApi, uniqueEmail } from '../support/fixtures.js';
import { repoRoot, startAccepted, startCancelled, waitForEnd } from '../support/generation-helpers.js';
import { useGenerationServer } from '../support/suite-server.js';
import { type BrowserSession, chromiumMissing, outputDir, useBrowser } from './browser.js';

// The reference client (web/) past its first page and past a session ended elsewhere: more
// than a page of projects and of versions, shown when the user asks for them; and a tab signed
// out by a refused refresh that says why and keeps the prompt that was being written.

if (chromiumMissing) console.warn(`Skipping the web client paging and session-end suite: ${chromiumMissing}.`);

/** One more than the most a page of the API holds. */
const PAST_A_PAGE = 101;

beforeAll(async () => {
  // The client as `npm install` builds it, from this checkout's sources (see web-client.test.ts).
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
// A hundred generations started (and cancelled) over the API in a few seconds, past the limits a user has.
const suite = useGenerationServer({
  OFFLINE_CHUNK_DELAY_MS: '5',
  RATE_LIMIT_GENERATIONS_PER_USER: 'off',
  RATE_LIMIT_GENERATIONS_PER_IP: 'off',
  MAX_ACTIVE_GENERATIONS_PER_USER: '1000',
});

const textOf = async (locator: Locator) => ((await locator.count()) > 0 ? await locator.innerText() : '');
/** A screenshot of the whole page, or of the window only (`fullPage: false`: a long list's end, where the window is). */
const shot = (page: Page, name: string, fullPage = true) => page.screenshot({ path: join(outputDir, 'web-client-more', `${name}.png`), fullPage });
/** Whether `locator` has the focus (the client moves it in an effect, after the render: poll it). */
const focused = (locator: Locator) => locator.evaluate((element) => element === document.activeElement);

/** A new tab of `session` in which `email` signs in (or up), showing the projects. */
async function signedInTab(session: BrowserSession, email: string, action: 'Sign in' | 'Sign up' = 'Sign in') {
  const page = await session.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(suite.server.url);
  await signInWith(page, email, action);
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  return { page, errors };
}

async function signInWith(page: Page, email: string, action: 'Sign in' | 'Sign up' = 'Sign in') {
  await page.getByRole('textbox', { name: 'Email' }).fill(email);
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByRole('button', { name: action }).click();
}

describe.skipIf(chromiumMissing)('the web client past a page', () => {
  const browser = useBrowser('web-client-more');

  it('shows the 101st project after Load more projects', async () => {
    const email = uniqueEmail('e2e-many-projects');
    const owner = await signUpOverApi(suite.server, email);
    // Newest first: the first one made is the one past the first page.
    for (let i = 1; i <= PAST_A_PAGE; i++) await createProject(owner.client, { name: `Listed ${String(i).padStart(3, '0')}`, target: 'FLUTTER' });
    const { page, errors } = await signedInTab(browser, email);
    try {
      const list = page.getByRole('list', { name: 'Your projects' });
      await page.getByRole('link', { name: 'Listed 101', exact: true }).waitFor();
      expect(await list.getByRole('listitem').count()).toBe(100);
      expect(await page.getByRole('link', { name: 'Listed 001', exact: true }).count()).toBe(0);

      const more = page.getByRole('button', { name: 'Load more projects' });
      await more.scrollIntoViewIfNeeded();
      await shot(page, '1-load-more-projects', false);
      await more.click();
      const oldest = page.getByRole('link', { name: 'Listed 001', exact: true });
      await oldest.waitFor();
      expect(await list.getByRole('listitem').count()).toBe(PAST_A_PAGE);
      // The last page: the button goes, and the focus is on the first project it added.
      expect(await more.count()).toBe(0);
      await expect.poll(() => focused(oldest)).toBe(true);
      await shot(page, '2-more-projects', false);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('lists the versions of a session whatever the project made between them, with no Show older versions', async () => {
    const { server } = suite;
    const email = uniqueEmail('e2e-many-versions');
    const owner = await signUpOverApi(server, email);
    const project = await createProject(owner.client, { name: 'Long history', target: 'FLUTTER' });
    const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list' });
    expect((await waitForEnd(server, owner.client, owner.accessToken, first.id)).status).toBe('SUCCEEDED');
    // A hundred generations of other sessions, then a follow-up of the first: its session's v1 is
    // the project's 102nd generation, past the project's first page but on its session's.
    for (let i = 0; i < PAST_A_PAGE - 1; i++) {
      const other = await startAccepted(owner.client, { projectId: project.id, prompt: `Other app ${i}` });
      await owner.client.expectNoErrors(CancelGenerationDocument, { id: other.id });
    }
    const followUp = await startAccepted(owner.client, { projectId: project.id, prompt: 'Sort it by weight', sessionId: first.sessionId });

    const { page, errors } = await signedInTab(browser, email);
    try {
      await page.getByRole('link', { name: 'Long history', exact: true }).click();
      const versions = page.getByRole('complementary', { name: 'Versions' });
      await versions.getByRole('button', { name: 'Show version 2', exact: true }).waitFor();
      expect(await versions.getByRole('listitem').count()).toBe(2);
      expect(await textOf(versions.getByRole('listitem').first())).toContain('A packing list');
      // Every version of the session is there: nothing older to ask for, and Generate knows what comes next.
      expect(await versions.getByRole('button', { name: 'Show older versions' }).count()).toBe(0);
      expect(await page.getByText('Follow-up in this session (version 3)').count()).toBe(1);
      await shot(page, '3-versions-past-other-sessions');
      await waitForEnd(server, owner.client, owner.accessToken, followUp.id);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('keeps the focus at the end of the list when the last page of projects brings none', async () => {
    const email = uniqueEmail('e2e-unshared');
    const owner = await signUpOverApi(suite.server, email);
    // Another user's project shared with this one is its oldest: alone on the second page, until it is unshared.
    const other = await signUpOverApi(suite.server, uniqueEmail('e2e-sharer'));
    const shared = await createProject(other.client, { name: 'Shared for a while', target: 'FLUTTER' });
    const { addProjectMember } = await other.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: shared.id, email, role: 'VIEWER' } });
    if (addProjectMember.__typename !== 'ProjectMember') throw new Error(`sharing failed: ${addProjectMember.__typename}`);
    for (let i = 1; i < PAST_A_PAGE; i++) await createProject(owner.client, { name: `Own ${String(i).padStart(3, '0')}`, target: 'FLUTTER' });
    const { page, errors } = await signedInTab(browser, email);
    try {
      const list = page.getByRole('list', { name: 'Your projects' });
      await page.getByRole('link', { name: 'Own 100', exact: true }).waitFor();
      const more = page.getByRole('button', { name: 'Load more projects' });
      const { removeProjectMember } = await other.client.expectNoErrors(RemoveProjectMemberDocument, { input: { projectId: shared.id, userId: addProjectMember.user.id } });
      expect(removeProjectMember.__typename).toBe('Project');

      await more.click();
      // Nothing more to load: the button goes, and the focus stays on the last project, not on <body>.
      await expect.poll(() => more.count(), { timeout: 30_000 }).toBe(0);
      expect(await list.getByRole('listitem').count()).toBe(100);
      await expect.poll(() => focused(page.getByRole('link', { name: 'Own 001', exact: true }))).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('shows the versions of a session past its first page after Show older versions, one page of them, busy meanwhile', async () => {
    const { server } = suite;
    const email = uniqueEmail('e2e-long-session');
    const owner = await signUpOverApi(server, email);
    const project = await createProject(owner.client, { name: 'Long session', target: 'FLUTTER' });
    // Another session's generation, then a session of 101 versions: its v1 is one past its first page.
    await startCancelled(suite.server, owner, { projectId: project.id, prompt: 'Another app' });
    const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A packing list' });
    expect((await waitForEnd(server, owner.client, owner.accessToken, first.id)).status).toBe('SUCCEEDED');
    for (let i = 2; i <= PAST_A_PAGE; i++) await startCancelled(suite.server, owner, { projectId: project.id, prompt: `Change ${i}`, sessionId: first.sessionId });

    const { page, errors } = await signedInTab(browser, email);
    try {
      // The older page waits until the test lets it go.
      let release = () => {};
      const released = new Promise<void>((resolve) => (release = resolve));
      let asked = () => {};
      const olderAsked = new Promise<void>((resolve) => (asked = resolve));
      /** The sessions of the older pages asked for. */
      const olderPages: unknown[] = [];
      await page.route('**/graphql', async (route) => {
        const body = route.request().postDataJSON() as { query?: string; variables?: { after?: string; sessionId?: string } } | null;
        if (body?.query?.includes('ProjectVersions') && body.variables?.after) {
          olderPages.push(body.variables.sessionId);
          asked();
          await released;
        }
        await route.fallback();
      });
      await page.getByRole('link', { name: 'Long session', exact: true }).click();
      const versions = page.getByRole('complementary', { name: 'Versions' });
      await versions.waitFor();
      expect(await versions.getByRole('listitem').count()).toBe(100);
      // Older versions of its session come first: they are not numbered yet.
      expect(await versions.getByRole('button', { name: /^Show the version of / }).count()).toBe(100);
      expect(await versions.getByRole('button', { name: 'Show version 1', exact: true }).count()).toBe(0);
      expect(await page.getByText('Follow-up in this session', { exact: true }).count()).toBe(1);
      const older = versions.getByRole('button', { name: 'Show older versions' });
      await shot(page, '4-show-older-versions', false);
      await older.click();
      await olderAsked;

      // A follow-up, and a reload of the first page while the older one loads (Show asks for it):
      // the button stays busy, and the versions the new first page pushed out stay.
      const followUp = await startAccepted(owner.client, { projectId: project.id, prompt: 'Make it blue', sessionId: first.sessionId });
      await versions.getByRole('listitem').first().getByRole('button', { name: /^Show / }).click();
      await expect.poll(() => versions.getByRole('listitem').count(), { timeout: 30_000 }).toBe(PAST_A_PAGE);
      expect(await older.getAttribute('aria-disabled')).toBe('true');

      release();
      const v1 = versions.getByRole('button', { name: 'Show version 1', exact: true });
      await v1.waitFor();
      // Every page is loaded: the versions are numbered, and the button went with the last page.
      expect(await versions.getByRole('listitem').count()).toBe(PAST_A_PAGE + 1);
      expect(await versions.getByRole('button', { name: `Show version ${PAST_A_PAGE + 1}`, exact: true }).count()).toBe(1);
      expect(await textOf(versions.getByRole('listitem').first())).toContain('A packing list');
      expect(await older.count()).toBe(0);
      // The focus is on the version the page brought, not on <body> with the button.
      await expect.poll(() => focused(v1)).toBe(true);
      await shot(page, '4b-older-versions', false);
      // One page of the session's own, no walk through the project's.
      expect(olderPages).toEqual([first.sessionId]);
      await waitForEnd(server, owner.client, owner.accessToken, followUp.id);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the web client after its session was ended elsewhere', () => {
  const browser = useBrowser('web-client-more');

  /** A new user signed up in a tab, on the page of a new project named `name`. */
  async function onNewProject(label: string, name: string) {
    const email = uniqueEmail(label);
    const tab = await signedInTab(browser, email, 'Sign up');
    await tab.page.getByRole('textbox', { name: 'Project name' }).fill(name);
    await tab.page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
    await tab.page.getByRole('button', { name: 'Create project' }).click();
    await tab.page.getByRole('heading', { name, exact: true }).waitFor();
    return { ...tab, email };
  }

  /** The same user signs out of every session from another device; the tab finds out at its next request. */
  async function endedElsewhere(email: string) {
    const elsewhere = await signInOverApi(suite.server, email);
    expect((await elsewhere.client.expectNoErrors(SignOutDocument, { scope: 'GLOBAL' })).signOut).toBe(true);
  }

  it('says why it signed out, and says nothing after a sign-out the user chose', async () => {
    const { page, email, errors } = await onNewProject('e2e-ended', 'Ended');
    try {
      await endedElsewhere(email);
      await page.getByRole('textbox', { name: 'Prompt' }).fill('A packing list');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('button', { name: 'Sign in' }).waitFor();
      expect(await textOf(page.getByRole('status'))).toBe('Your session ended. Sign in again.');
      // The focus goes to the heading, which is described by the banner: a screen reader says why.
      const heading = page.getByRole('heading', { name: 'Kiln' });
      await expect.poll(() => focused(heading)).toBe(true);
      const description = await heading.evaluate((element) =>
        (element.getAttribute('aria-describedby') ?? '')
          .split(' ')
          .map((id) => document.getElementById(id)?.textContent ?? '')
          .join(' '),
      );
      expect(description).toBe('Your session ended. Sign in again.');
      await shot(page, '5-session-ended');

      await signInWith(page, email);
      await page.getByRole('heading', { name: 'Ended', exact: true }).waitFor();
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('button', { name: 'Sign in' }).waitFor();
      expect(await page.getByRole('status').count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('keeps the prompt being written through a forced sign-out, until it is sent', async () => {
    const { page, email, errors } = await onNewProject('e2e-draft', 'Drafted');
    try {
      await endedElsewhere(email);
      const prompt = page.getByRole('textbox', { name: 'Prompt' });
      await prompt.fill('A packing list\n  with weights');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('button', { name: 'Sign in' }).waitFor();

      // Signed in again, the tab is back on the project with the prompt as it was.
      await signInWith(page, email);
      await page.getByRole('heading', { name: 'Drafted', exact: true }).waitFor();
      expect(await prompt.inputValue()).toBe('A packing list\n  with weights');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.getByRole('button', { name: 'Show version 1', exact: true }).waitFor();
      expect(await prompt.inputValue()).toBe('');
      // Sent, it is not kept: a reload starts with an empty box.
      await page.reload();
      await page.getByRole('heading', { name: 'Drafted', exact: true }).waitFor();
      expect(await prompt.inputValue()).toBe('');

      // A sign-out the user chose forgets what was being written.
      await prompt.fill('Unsent');
      await page.getByRole('button', { name: 'Sign out' }).click();
      await signInWith(page, email);
      await page.getByRole('link', { name: 'Drafted', exact: true }).click();
      await page.getByRole('heading', { name: 'Drafted', exact: true }).waitFor();
      expect(await prompt.inputValue()).toBe('');
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
