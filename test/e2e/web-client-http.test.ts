import { join } from 'node:path';
import { execa } from 'execa';
import type { Locator, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { uniqueEmail } from '../support/fixtures.js';
import { repoRoot } from '../support/generation-helpers.js';
import { useGenerationServer } from '../support/suite-server.js';
import { chromiumMissing, outputDir, useBrowser } from './browser.js';

// The reference client (web/) when its WebSocket cannot connect: what it loads over HTTP
// must read as what the live streams show, and the streams must add to it, once the socket
// is back, without repeating a line.

if (chromiumMissing) console.warn(`Skipping the web client HTTP fallback suite: ${chromiumMissing}.`);

const PASSWORD = 'correct horse battery staple';

beforeAll(async () => {
  // The client as `npm install` builds it, from this checkout's sources (see web-client.test.ts).
  const { NODE_ENV: _, ...env } = process.env;
  await execa('npm', ['run', 'build:web'], { cwd: repoRoot, env, extendEnv: false });
});
const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5' });

const textOf = async (locator: Locator) => ((await locator.count()) > 0 ? await locator.innerText() : '');
const buildLog = (page: Page) => page.getByRole('log', { name: 'Build log' });

/** Signs a new user up, creates a FLUTTER project and starts a generation of `prompt` in it. */
async function generate(page: Page, url: string, prompt: string) {
  await page.goto(url);
  await page.getByRole('textbox', { name: 'Email' }).fill(uniqueEmail('e2e-http-log'));
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('textbox', { name: 'Project name' }).fill('Over HTTP');
  await page.getByRole('combobox', { name: 'Target' }).selectOption('FLUTTER');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.getByRole('textbox', { name: 'Prompt' }).fill(prompt);
  await page.getByRole('button', { name: 'Generate' }).click();
}

/** Resolves once the build log shows every step with its status, as a finished generation shows it. */
async function everyStepWithItsStatus(page: Page) {
  const steps = buildLog(page).locator('section');
  await expect.poll(async () => (await steps.count()) > 0 && (await steps.count()) === (await buildLog(page).locator('.tag').count()), { timeout: 30_000 }).toBe(true);
}

/** Resolves once the page has rendered what it had received: the client adds what arrives once a frame. */
const rendered = (page: Page) => page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));

describe.skipIf(chromiumMissing)('the web client without a WebSocket', () => {
  const browser = useBrowser('web-client-http');

  it('shows the build log over HTTP as the live stream did, and adds nothing twice once the socket is back', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    try {
      // A first build that fails, fixed in round 1: the log has the steps of both rounds.
      await generate(page, suite.server.url, 'A reading list with a build error');
      await expect.poll(() => textOf(page.getByRole('region', { name: 'Fix rounds' })), { timeout: 60_000 }).toContain('Round 1: SUCCEEDED');
      await everyStepWithItsStatus(page);
      const live = await textOf(buildLog(page));
      expect(live).toMatch(/analyze · fix round 1/);

      // From now on every socket is closed as a proxy without WebSocket support would, until `allowed`.
      let allowed = false;
      const completed: string[] = [];
      await page.routeWebSocket(/\/graphql$/, (socket) => {
        if (!allowed) return void socket.close({ code: 1011, reason: 'upstream' });
        const server = socket.connectToServer();
        const logStreams = new Set<string>();
        socket.onMessage((message) => {
          const { type, id, payload } = JSON.parse(String(message)) as { type: string; id: string; payload?: { query: string } };
          if (type === 'subscribe' && payload!.query.includes('buildLogs')) logStreams.add(id);
          server.send(message);
        });
        server.onMessage((message) => {
          const { type, id } = JSON.parse(String(message)) as { type: string; id: string };
          socket.send(message);
          if (type === 'complete' && logStreams.has(id)) completed.push(id);
        });
      });
      await page.reload();
      await page.getByText('Reconnecting… (upstream)').waitFor({ timeout: 30_000 });
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 30_000 }).toContain('SUCCEEDED');
      await expect.poll(() => textOf(buildLog(page)), { timeout: 30_000 }).toBe(live);
      await page.screenshot({ path: join(outputDir, 'web-client-http', '1-log-over-http.png'), fullPage: true });

      // The socket is back: the build-log stream ends without adding a line the page had.
      allowed = true;
      await expect.poll(() => completed.length, { timeout: 30_000 }).toBeGreaterThan(0);
      await rendered(page);
      expect(await textOf(buildLog(page))).toBe(live);
      expect(await page.getByRole('alert').count()).toBe(0);
      expect(errors).toEqual([]);
      expect(browser.escaped).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe.skipIf(chromiumMissing)('the web client without a WebSocket, for a build log longer than what HTTP gives', () => {
  const flooded = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5' }, 'flood');
  const browser = useBrowser('web-client-http-long');

  it('shows the last lines over HTTP under a line that counts the ones before them', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    try {
      await generate(page, flooded.server.url, 'A reading list');
      await expect.poll(() => textOf(page.getByRole('status')), { timeout: 60_000 }).toMatch(/SUCCEEDED|FAILED/);
      await everyStepWithItsStatus(page);
      const live = (await textOf(buildLog(page))).trimEnd().split('\n');
      expect(live.length).toBeGreaterThan(1000);

      await page.routeWebSocket(/\/graphql$/, (socket) => socket.close({ code: 1011, reason: 'upstream' }));
      await page.reload();
      await page.getByText('Reconnecting… (upstream)').waitFor({ timeout: 30_000 });
      await expect.poll(() => textOf(buildLog(page)), { timeout: 30_000 }).toMatch(/\[kiln\] \d+ earlier lines are not shown here/);
      await page.screenshot({ path: join(outputDir, 'web-client-http-long', '1-tail-over-http.png') });
      const overHttp = (await textOf(buildLog(page))).trimEnd().split('\n');
      // The log up to its last line as the live stream showed it.
      expect(overHttp.at(-1)).toBe(live.at(-1));
      expect(Number(/\[kiln\] (\d+) earlier lines/.exec(overHttp.join('\n'))![1])).toBeGreaterThan(0);
      expect(errors).toEqual([]);
      expect(browser.escaped).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
