/**
 * The console in a real browser (Debian's Chromium through playwright-core) against a running
 * gateway with a real store, real SMTP clients, a real Dovecot and a real upstream SMTP server:
 * what an operator does, as an operator sees it. Every test fails on any browser console error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Page } from 'playwright-core';
import { hashPassword } from '../gateway/config/password.js';
import { runCli, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { startBrowser, type TestBrowser } from './helpers/browser.js';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { closedPort, startUpstream, type Upstream } from './helpers/upstream.js';
import { submissionToml, submit, waitDelivered, waitQueue } from './helpers/outbound.js';
import { fixture, projectRoot, tempDir } from './helpers/paths.js';

const PASSWORD = 'correct horse battery staple';
const USERS = { alice: 'admin', olga: 'operator', audrey: 'auditor' } as const;

/** `[admin]` with a user of each role, and the example partition policy (every stage, .exe blocked). */
function consoleToml(extra = ''): string {
  const users = Object.entries(USERS)
    .map(([name, role]) => `[[admin.user]]\nname = "${name}"\npassword_hash = "${hashPassword(PASSWORD)}"\nrole = "${role}"\n`)
    .join('\n');
  return `[partition]\ndefault_domain = "example.com"\npolicy = ${JSON.stringify(path.join(projectRoot, 'policy', 'examples', 'partition.toml'))}\n\n${extra}\n[admin]\n\n${users}`;
}

/** A gateway with the console, a browser, and cleanup in the right order (browser before gateway: its event stream is open). */
async function setup(t: { after(fn: () => Promise<void>): void }, toml: string): Promise<{ gw: TestGateway; base: string; browser: TestBrowser }> {
  const gw = await startTestGateway(toml);
  const browser = await startBrowser().catch(async (err: unknown) => {
    await gw.cleanup();
    throw err;
  });
  t.after(async () => {
    await browser.close();
    await gw.cleanup();
  });
  return { gw, base: gw.gateway.web!.url, browser };
}

async function signIn(page: Page, base: string, user: keyof typeof USERS = 'alice'): Promise<void> {
  await page.goto(`${base}/`);
  await page.getByLabel('User').fill(user);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Dashboard', level: 1 }).waitFor();
}

async function smtpSend(port: number, raw: Buffer, to = 'support@example.com'): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: 'customer@example.org', to: [to] }, raw });
  const id = /queued as (\S+)/.exec(info.response)?.[1];
  assert.ok(id, info.response);
  return id;
}

/** The flash line an action left. */
const flash = (page: Page) => page.locator('.flash').innerText();

test('console: sign in with the keyboard, find a message by subject, open it, restore its quarantined attachment and see it back', async (t) => {
  const { gw, base, browser } = await setup(t, consoleToml('[[alias]]\nname = "support"\naddress = "support@example.com"\n'));
  const id = await smtpSend(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  await smtpSend(gw.port, readFileSync(fixture('attachments', 'clean.eml')));

  const page = await browser.newPage();
  // Signed out, any page leads to the sign-in form, and back to that page after it.
  await page.goto(`${base}/messages`);
  assert.equal(new URL(page.url()).pathname, '/sign-in');
  // The keyboard alone: the user field has the focus, Tab to the password, Enter signs in.
  await page.keyboard.type('alice');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Messages', level: 1 }).waitFor();
  // The first Tab reaches the skip link, which moves the focus past the navigation.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate('document.activeElement?.textContent'), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate('document.activeElement?.id'), 'main');

  await page.getByLabel('Search').fill('double');
  await page.getByLabel('Search').press('Enter');
  await page.waitForURL(/text=double/);
  const rows = page.locator('tbody tr');
  assert.equal(await rows.count(), 1, 'only the message whose subject has "double"');
  await page.getByRole('link', { name: 'double extension' }).click();
  await page.waitForURL(`${base}/messages/${id}`);
  assert.match(await page.locator('dl.facts').first().innerText(), /Subject\s+double extension/);

  const attachment = page.locator('tr', { hasText: 'invoice.pdf.exe' });
  assert.match(await attachment.innerText(), /quarantined\s+blocked extension \.exe/);
  assert.match(await page.locator('ol.timeline').innerText(), /attachments: "invoice\.pdf\.exe" quarantined: blocked extension \.exe/);
  await attachment.getByRole('button', { name: 'Restore' }).click();
  await page.waitForURL(`${base}/messages/${id}`);
  assert.equal(await flash(page), 'Restored invoice.pdf.exe to its message.');
  assert.match(await page.locator('tr', { hasText: 'invoice.pdf.exe' }).innerText(), /attached/);
  assert.equal(await page.locator('tr', { hasText: 'invoice.pdf.exe' }).getByRole('button', { name: 'Restore' }).count(), 0);
  assert.deepEqual(await gw.store.listQuarantine({ messageId: id }), [], 'gone from the quarantine');
  // The raw download (the browser's own request, with its session) holds the attachment again.
  const raw = await page.request.get(`${base}/api/v1/messages/${id}/raw`);
  assert.equal(raw.headers()['content-disposition'], `attachment; filename="${id}.eml"; filename*=UTF-8''${id}.eml`);
  assert.match((await raw.body()).toString(), /filename="?invoice\.pdf\.exe"?/);

  await page.getByRole('navigation').getByRole('link', { name: 'Audit log' }).click();
  const entry = page.locator('tbody tr', { hasText: 'restore' });
  assert.match(await entry.innerText(), new RegExp(`user alice\\s+restore\\s+${id}\\.1\\s+127\\.0\\.0\\.1\\s+ok`));

  // Readable at 1280 and 390 pixels: no page scrolls sideways (a wide table scrolls in its own box).
  for (const width of [1280, 390]) {
    const narrow = await browser.newPage({ width });
    await signIn(narrow, base);
    for (const p of ['/', '/messages', `/messages/${id}`, '/quarantine', '/aliases', '/queue', '/policy', '/audit']) {
      await narrow.goto(`${base}${p}`);
      const overflow = await narrow.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth');
      assert.equal(overflow, 0, `${p} at ${width} px scrolls sideways by ${overflow} px`);
    }
  }
  assert.deepEqual(browser.errors, []);
});

test('console: an auditor sees no buttons, and a change posted anyway is refused; an operator works the quarantine in bulk', async (t) => {
  const { gw, base, browser } = await setup(t, consoleToml());
  const original = readFileSync(fixture('attachments', 'double-extension.eml'));
  const ids = [await smtpSend(gw.port, original), await smtpSend(gw.port, original)];

  const auditor = await browser.newPage();
  await signIn(auditor, base, 'audrey');
  await auditor.getByRole('navigation').getByRole('link', { name: 'Quarantine' }).click();
  assert.equal(await auditor.locator('tbody tr').count(), 2);
  assert.equal(await auditor.getByRole('button', { name: 'Restore' }).count(), 0);
  assert.equal(await auditor.getByRole('link', { name: 'Download' }).count(), 0, 'an auditor may not read quarantined content');
  const [first] = await gw.store.listQuarantine({ messageId: ids[0]! });
  const refused = await auditor.request.post(`${base}/quarantine/${first!.id}/restore`, {
    form: { back: '/quarantine' },
    headers: { origin: base },
    maxRedirects: 0,
  });
  assert.equal(refused.status(), 303);
  await auditor.goto(`${base}/quarantine`);
  assert.equal(await flash(auditor), 'The auditor role may not change this');
  assert.equal((await gw.store.listQuarantine({})).length, 2, 'nothing restored');

  const operator = await browser.newPage();
  await signIn(operator, base, 'olga');
  await operator.goto(`${base}/quarantine`);
  assert.match(await operator.locator('main').innerText(), /Filter the list to restore or delete in bulk\./);
  await operator.getByLabel('File name').fill('*.EXE');
  await operator.getByRole('button', { name: 'Filter' }).click();
  await operator.getByRole('button', { name: 'Delete all 2 shown' }).click();
  await operator.waitForURL(/file=\*\.EXE|file=%2A\.EXE/);
  assert.equal(await flash(operator), 'Deleted 2 attachments.');
  assert.match(await operator.locator('main').innerText(), /Nothing in the quarantine matches\./);
  assert.deepEqual(await gw.store.listQuarantine({}), []);

  // Retention by hand: the operator deletes a message from its page, for good.
  await operator.goto(`${base}/messages/${ids[0]}`);
  await operator.getByRole('button', { name: 'Delete message' }).click();
  await operator.waitForURL(`${base}/messages`);
  assert.equal(await flash(operator), `Deleted message ${ids[0]} for good.`);
  assert.equal(await gw.store.getMessage(ids[0]!), undefined);
  assert.equal(await operator.locator('tbody tr').count(), 1, 'the other message is left');
  assert.deepEqual(browser.errors, []);
});

test('console: test an alias against a real Dovecot and see each step as the CLI reports it; deactivate and activate it', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'agent', password: 'pw' }] });
  t.after(() => dovecot.stop());
  const alias = ['[[alias]]', 'name = "support"', 'address = "support@example.com"', ...dovecotIncoming(dovecot, 'agent'), 'poll_interval = 3600'].join('\n');
  const { gw, base, browser } = await setup(t, consoleToml(alias));
  const page = await browser.newPage();
  await signIn(page, base);
  await page.getByRole('navigation').getByRole('link', { name: 'Aliases' }).click();
  await page.locator('#alias-support').getByRole('button', { name: 'Test connection' }).click();
  await page.getByRole('heading', { name: /Connection test of support: passed/ }).waitFor();
  const shown = await page
    .locator('#test-report tbody tr')
    .evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent!.trim())));
  const cli = await runCli(['aliases', 'test', 'support', '--json', '--config', gw.configFile]);
  assert.equal(cli.code, 0, cli.stderr);
  const report = JSON.parse(cli.stdout.toString()) as { ok: boolean; steps: { server: string; step: string; result: string; detail: string }[] };
  assert.equal(report.ok, true);
  assert.deepEqual(
    shown.map(([server, step, result]) => [server, step, result]),
    report.steps.map((s) => [s.server, s.step, s.result]),
  );
  assert.ok(shown.some(([, step, result]) => step === 'login' && result === 'pass'));

  const row = page.locator('#alias-support');
  await row.getByRole('button', { name: 'Deactivate' }).click();
  assert.equal(await flash(page), 'Alias support is inactive: its mailbox is not fetched until it is activated.');
  assert.match(await page.locator('#alias-support').innerText(), /inactive/);
  assert.match(await page.locator('#alias-support').innerText(), /by admin/);
  await page.locator('#alias-support').getByRole('button', { name: 'Activate' }).click();
  assert.equal(await flash(page), 'Alias support is active.');
  assert.deepEqual(browser.errors, []);
});

test('console: retry queued mail, a held message and one whose server was down, which then goes out; the queue page follows by itself', async (t) => {
  const port = await closedPort();
  const aliases = `[[alias]]\nname = "support"\naddress = "support@example.com"\n[alias.outgoing]\nhost = "127.0.0.1"\nport = ${port}\n\n[[alias]]\nname = "desk"\naddress = "desk@example.com"\n`;
  const { gw, base, browser } = await setup(t, consoleToml(submissionToml(['*'], 'retry_intervals = [3600]\nretry_jitter = 0.0') + aliases));
  let upstream: Upstream | undefined;
  t.after(async () => upstream?.close());
  const submissionPort = gw.gateway.submission!.addresses[0]!.port;
  const waiting = await submit(submissionPort, { from: 'support@example.com', to: 'customer@example.org', subject: 'waiting', text: 'Hello.' });
  const held = await submit(submissionPort, { from: 'desk@example.com', to: 'customer@example.org', subject: 'held', text: 'Hello.' });
  await waitQueue(gw.store, waiting, (e) => e.attempts >= 1);
  await waitQueue(gw.store, held, (e) => e.held !== undefined);

  const page = await browser.newPage();
  await signIn(page, base, 'olga');
  await page.getByRole('navigation').getByRole('link', { name: 'Queue' }).click();
  assert.match(await page.locator(`#queued-${held}`).innerText(), /held\s+alias "desk" has no \[alias\.outgoing\] server/);
  assert.match(await page.locator(`#queued-${waiting}`).innerText(), /retrying/);
  assert.match(await page.locator(`#queued-${waiting}`).innerText(), /ECONNREFUSED/);

  await page.getByRole('button', { name: 'Retry all 1 held' }).click();
  assert.equal(await flash(page), '1 queued message(s) will be tried again now.');
  // Still no route: tried, and held again.
  await waitQueue(gw.store, held, (e) => e.held !== undefined);

  upstream = await startUpstream({ port });
  await page.goto(`${base}/queue`);
  await page.evaluate('window.sameDocument = true');
  const row = page.locator(`#queued-${waiting}`);
  // The form posts and comes back; the delivery that follows takes the row away without a reload.
  await row.getByRole('button', { name: 'Retry now' }).click();
  await page.waitForURL(`${base}/queue`);
  assert.equal(await flash(page), `Message ${waiting} will be tried again now.`);
  await page.evaluate('window.sameDocument = true');
  await page.locator(`#queued-${waiting}`).waitFor({ state: 'detached' });
  assert.equal(await page.evaluate('window.sameDocument'), true, 'no reload');
  assert.equal((await waitDelivered(gw.store, waiting)).delivery.status, 'delivered');
  assert.equal(upstream.received.length, 1);

  await page.goto(`${base}/messages/${waiting}`);
  assert.match(await page.locator('ol.timeline').innerText(), /delivered/);
  assert.deepEqual(browser.errors, []);
});

test('console: the dashboard follows arriving mail live; a policy test shows each stage; the README screenshot', async (t) => {
  const { gw, base, browser } = await setup(t, consoleToml('[[alias]]\nname = "support"\naddress = "support@example.com"\n'));
  await smtpSend(gw.port, readFileSync(fixture('attachments', 'clean.eml')));
  const page = await browser.newPage();
  await signIn(page, base);
  const lastHour = page.getByTestId('last-hour');
  assert.equal(await lastHour.innerText(), '1');
  await page.evaluate('window.sameDocument = true');
  await smtpSend(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  await smtpSend(gw.port, readFileSync(fixture('delivery-exceptions', 'auto-reply.eml')));
  await page.getByTestId('last-hour').filter({ hasText: /^3$/ }).waitFor();
  assert.equal(await page.evaluate('window.sameDocument'), true, 'updated in place, not reloaded');
  // The nodes block: on LevelDB one node, this one, live (issue 16: several nodes list each).
  const node = page.locator('#dashboard tr[id^="node-"]');
  assert.match(await node.innerText(), /\(this node\)\s+live/);
  const smtpRow = page.locator('#dashboard tbody tr', { hasText: 'SMTP listener' }).first();
  assert.deepEqual(
    (await smtpRow.locator('td').allInnerTexts()).map(Number),
    [3, 0, 1, 1, 0, 0, 0],
    'messages, wrapped, attachment blocked, delivery exception, masked, delivered, failed',
  );

  // The README's picture of the console, taken here so that it shows what the console is.
  // `npm run screenshot` writes it into docs/; a plain test run into a temporary directory.
  const tmp = await tempDir();
  t.after(() => tmp.cleanup());
  const shot = path.join(tmp.dir, 'console.png');
  await page.screenshot({ path: shot });
  assert.equal(readFileSync(shot).subarray(1, 4).toString(), 'PNG');
  const keep = process.env['MAILGATE_SCREENSHOT'];
  if (keep) {
    await mkdir(path.dirname(keep), { recursive: true });
    await copyFile(shot, keep);
  }

  await page.getByRole('navigation').getByRole('link', { name: 'Policy test' }).click();
  await page.getByLabel('Message (.eml)').setInputFiles(fixture('attachments', 'double-extension.eml'));
  await page.getByRole('button', { name: 'Test' }).click();
  await page.getByRole('heading', { name: /Result for double-extension\.eml: would be stored/ }).waitFor();
  assert.match(await page.locator('#policy-report tr', { hasText: 'attachments' }).innerText(), /invoice\.pdf\.exe/);
  assert.equal((await gw.store.listMessages({})).length, 3, 'a policy test stores nothing');
  assert.deepEqual(browser.errors, []);
});
