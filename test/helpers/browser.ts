/**
 * A real Chromium for the console tests: Debian's `chromium` (installed on first use, as
 * Dovecot is) driven by playwright-core; never `playwright install`, which downloads a browser.
 * Every page records what the browser's console says: a test fails on any error there.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ensureDebianPackages } from './debian.js';

const CHROMIUM = '/usr/bin/chromium';

export async function ensureChromium(): Promise<void> {
  await ensureDebianPackages({
    what: 'Chromium',
    packages: ['chromium'],
    installed: () => existsSync(CHROMIUM),
    installedTest: `test -x ${CHROMIUM}`,
  });
}

export interface TestBrowser {
  /** A new page in its own context (cookies of its own) at WIDTH pixels; its console errors go to `errors`. */
  newPage(opts?: { width?: number; height?: number }): Promise<Page>;
  /** Every console error and uncaught exception of every page so far, with the page's address. */
  errors: string[];
  close(): Promise<void>;
}

export async function startBrowser(): Promise<TestBrowser> {
  await ensureChromium();
  // As root (CI, our machines) Chromium's sandbox cannot start: RECIPES.md.
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const contexts: BrowserContext[] = [];
  const errors: string[] = [];
  return {
    errors,
    async newPage({ width = 1280, height = 900 } = {}) {
      const context = await browser.newContext({ viewport: { width, height } });
      contexts.push(context);
      const page = await context.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`${page.url()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`${page.url()}: uncaught ${e.message}`));
      // A deletion asks first (console.js); the tests answer yes, as the operator would.
      page.on('dialog', (d) => void d.accept());
      return page;
    },
    async close() {
      for (const c of contexts) await c.close();
      await browser.close();
    },
  };
}
