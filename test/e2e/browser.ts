import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { useStarted } from '../support/lifecycle.js';

// Debian's Chromium driven by playwright-core, with the network cut at loopback: every
// request to another host is aborted and recorded, so a test fails when a page tried to
// reach a CDN, a font service or anything else beyond this machine.

export const CHROMIUM = '/usr/bin/chromium';
export const chromiumMissing = existsSync(CHROMIUM) ? null : `${CHROMIUM} is not installed (apt-get install chromium)`;

/** Where the screenshots of each step go (gitignored). */
export const outputDir = fileURLToPath(new URL('./output/', import.meta.url));

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

export interface BrowserSession {
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** Requests beyond loopback that were attempted (and aborted). */
  escaped: string[];
  /** Every URL the pages requested. */
  requested: string[];
  /** Console errors and uncaught exceptions of the page. */
  consoleErrors: string[];
  /** Saves a full-page screenshot as `<name>.png` under `outputDir/<suite>/`. */
  screenshot(name: string): Promise<void>;
  close(): Promise<void>;
}

/** A fresh headless Chromium (its own temporary profile) with one page. */
export async function openBrowser(suite: string): Promise<BrowserSession> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // Tall enough to hold a whole project page: Chromium does not paint an out-of-process
  // iframe (the sandboxed preview) outside the viewport, so a full-page screenshot would miss it.
  const context = await browser.newContext({ viewport: { width: 1280, height: 1600 }, acceptDownloads: true });
  const escaped: string[] = [];
  const requested: string[] = [];
  const consoleErrors: string[] = [];
  const external = (url: string) => {
    const { protocol, host, hostname } = new URL(url);
    return (protocol === 'http:' || protocol === 'https:' || protocol === 'ws:' || protocol === 'wss:') && !LOOPBACK.has(hostname) && !LOOPBACK.has(host);
  };
  await context.route(
    (url) => external(url.href),
    (route) => {
      escaped.push(route.request().url());
      return route.abort('blockedbyclient');
    },
  );
  // Requests the router does not see (e.g. from workers) still show up here.
  context.on('request', (request) => {
    requested.push(request.url());
    if (external(request.url()) && !escaped.includes(request.url())) escaped.push(request.url());
  });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  const dir = join(outputDir, suite);
  await mkdir(dir, { recursive: true });
  return {
    browser,
    context,
    page,
    escaped,
    requested,
    consoleErrors,
    screenshot: async (name) => void (await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true })),
    close: () => browser.close(),
  };
}

/** The suite's browser: opened before its tests, closed after them. */
export function useBrowser(suite: string): BrowserSession {
  return useStarted(() => openBrowser(suite), (session) => session.close());
}
