import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { loadConfigText } from '../gateway/config/load.js';
import { silentLogger } from '../lib/logger.js';
import { startRetriever, type PollResult } from '../gateway/fetch/retriever.js';
import { deliveryTargets } from '../gateway/fetch/recipients.js';
import { openTestStore } from './helpers/test-store.js';
import type { Store } from '../storage/store.js';
import { ensureDovecot, startDovecot, type TestDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { fixture, tempDir } from './helpers/paths.js';

let dovecot: TestDovecot;
before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({
    users: [
      { name: 'shared', password: 'pw' },
      { name: 'team', password: 'pw' },
      { name: 'desk', password: 'pw' },
    ],
  });
});
after(() => dovecot?.stop());

const aliasToml = (name: string, address: string, user: string, extra: string[] = []) =>
  [
    '[[alias]]',
    `name = "${name}"`,
    `address = "${address}"`,
    ...extra.filter((e) => !e.startsWith('incoming:')),
    ...dovecotIncoming(dovecot, user),
    'poll_interval = 3600',
    'idle = false',
    ...extra.filter((e) => e.startsWith('incoming:')).map((e) => e.slice('incoming:'.length)),
  ].join('\n');

async function runOnce(t: { after(fn: () => Promise<void>): void }, toml: string, prepare?: (store: Store) => Promise<void>) {
  const { dir, cleanup } = await tempDir();
  const config = loadConfigText(`data_dir = ${JSON.stringify(path.join(dir, 'data'))}\n${toml}`, path.join(dir, 'mailgate.toml'), {});
  const store = await openTestStore(config.data_dir);
  t.after(async () => {
    await store.close();
    await cleanup();
  });
  await prepare?.(store);
  const polls: PollResult[] = [];
  const retriever = startRetriever({ config, store, logger: silentLogger(), stages: () => [], hooks: { afterPoll: (_a, r) => polls.push(r) } });
  const deadline = Date.now() + 15_000;
  while (polls.length === 0) {
    assert.ok(Date.now() < deadline, 'a poll completes');
    await new Promise((r) => setTimeout(r, 20));
  }
  await retriever.stop();
  return { store, retriever, poll: polls[0]! };
}

const msg = (headers: string[]) => Buffer.from([...headers, 'Subject: hello', 'Message-ID: <m@example.net>', '', 'body', ''].join('\r\n'));

test('a message for two aliases of one mailbox is fetched once and stored once per alias; unmatched mail goes to the first alias', async (t) => {
  await dovecot.deliver('shared', msg(['From: c@example.net', 'To: sales@example.com, Billing <billing@example.com>']));
  await dovecot.deliver('shared', msg(['From: c@example.net', 'To: someone@else.example', 'Delivered-To: invoices@old.example.net']));
  await dovecot.deliver('shared', msg(['From: c@example.net', 'To: nobody@else.example']));
  const { store, retriever } = await runOnce(
    t,
    [
      aliasToml('sales', 'sales@example.com', 'shared'),
      aliasToml('billing', 'billing@example.com', 'shared', ['redirection_addresses = ["invoices@old.example.net"]']),
    ].join('\n'),
  );
  assert.deepEqual(retriever.aliases, ['sales'], 'one worker for the shared mailbox');
  const sales = await store.listMessages({ alias: 'sales' });
  const billing = await store.listMessages({ alias: 'billing' });
  assert.equal(sales.length, 2, 'the message to both, and the unmatched one');
  assert.equal(billing.length, 2, 'the message to both, and the redirected one');
  assert.deepEqual(billing.map((m) => m.envelope.rcptTo).sort(), [['billing@example.com'], ['billing@example.com']]);
  assert.deepEqual(await dovecot.listMessages('shared'), [], 'each mailbox message moved once all its copies were stored');
  assert.equal((await dovecot.listMessages('shared', 'Processed')).length, 3);
});

test('split_recipients stores one message per unique To/Cc recipient', async (t) => {
  await dovecot.deliver('team', msg(['From: c@example.net', 'To: team@example.com, Ann <ann@example.com>', 'Cc: bob@example.com, ANN@example.com']));
  const { store } = await runOnce(t, aliasToml('team', 'team@example.com', 'team', ['incoming:split_recipients = true']));
  const stored = await store.listMessages({ alias: 'team' });
  assert.deepEqual(stored.map((m) => m.envelope.rcptTo[0]).sort(), ['ann@example.com', 'bob@example.com', 'team@example.com']);
});

test('after a crash between copies, only the missing copies are stored, then the message is moved', async (t) => {
  await dovecot.deliver('shared', msg(['From: c@example.net', 'To: sales@example.com, billing@example.com']));
  // The mailbox key the retriever will see: UIDVALIDITY:UID of the only message.
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: dovecot.imapPort,
    secure: false,
    auth: { user: 'shared', pass: 'pw' },
    logger: false,
    tls: { ca: [readFileSync(fixture('tls', 'cert.pem'))] },
  });
  await client.connect();
  const mailbox = await client.mailboxOpen('INBOX');
  const only = ((await client.search({ all: true }, { uid: true })) || [])[0];
  await client.logout();
  const itemKey = `${mailbox.uidValidity}:${only}`;
  const { store } = await runOnce(
    t,
    [aliasToml('sales', 'sales@example.com', 'shared'), aliasToml('billing', 'billing@example.com', 'shared')].join('\n'),
    // The billing copy was stored before a crash: its own key is recorded, the mailbox key
    // (the leading alias's, written with the last copy) is not.
    (s) => s.putFetched({ alias: 'billing', key: itemKey }, { id: '01JPRESTOREDXXXXXXXXXXXXXX' }),
  );
  assert.equal((await store.listMessages({ alias: 'billing' })).length, 0, 'the copy already recorded is not stored again');
  assert.equal((await store.listMessages({ alias: 'sales' })).length, 1, 'the missing copy is stored');
  assert.deepEqual(await dovecot.listMessages('shared'), [], 'then the message is moved');
});

test('an alias with status = "inactive" in the file keeps its mail in the shared mailbox; mail for no alias goes to the first active one', async (t) => {
  await dovecot.deliver('desk', msg(['From: c@example.net', 'To: sales@example.com']));
  await dovecot.deliver('desk', msg(['From: c@example.net', 'To: billing@example.com']));
  await dovecot.deliver('desk', msg(['From: c@example.net', 'To: nobody@else.example']));
  const { store, retriever, poll } = await runOnce(
    t,
    // sales is configured first, but inactive: billing leads the mailbox.
    [aliasToml('sales', 'sales@example.com', 'desk', ['status = "inactive"']), aliasToml('billing', 'billing@example.com', 'desk')].join('\n'),
  );
  assert.deepEqual(retriever.aliases, ['billing']);
  assert.deepEqual(poll, { stored: 2, finished: 0, deferred: 0, held: 1 });
  assert.equal((await store.listMessages({ alias: 'sales' })).length, 0, 'nothing stored for the inactive alias');
  assert.deepEqual(
    (await store.listMessages({ alias: 'billing' })).map((m) => m.envelope.rcptTo[0]),
    ['billing@example.com', 'billing@example.com'],
  );
  assert.equal((await dovecot.listMessages('desk')).length, 1, "the inactive alias's message is left in the mailbox");
  assert.equal((await dovecot.listMessages('desk', 'Processed')).length, 2);
});

test('deliveryTargets: copies only for the aliases that receive mail now; mail for no alias goes to the first that does', () => {
  const alias = (name: string, address: string) => ({ name, address, redirection_addresses: [], status: 'active', default: false }) as never;
  const group = [alias('a', 'a@x.example'), alias('b', 'b@x.example'), alias('c', 'c@x.example')];
  const names = (h: string, receiving: string[]) =>
    deliveryTargets(Buffer.from(h + '\r\n\r\n'), group, (a) => receiving.includes(a['name' as never])).map((t) => t.alias['name' as never]);
  assert.deepEqual(names('To: a@x.example, b@x.example', ['b', 'c']), ['b']);
  assert.deepEqual(names('To: a@x.example', ['b', 'c']), [], 'left in the mailbox');
  assert.deepEqual(names('To: z@z.example', ['b', 'c']), ['b']);
  assert.deepEqual(names('To: z@z.example', []), []);
});

test('deliveryTargets reads To, Cc and delivery headers, case-insensitively', () => {
  const alias = (name: string, address: string, extra: object = {}) =>
    ({ name, address, redirection_addresses: [], status: 'active', default: false, ...extra }) as never;
  const group = [alias('a', 'a@x.example'), alias('b', 'B@x.example', { redirection_addresses: ['old@y.example'] })];
  const names = (h: string) => deliveryTargets(Buffer.from(h + '\r\n\r\n'), group).map((t) => t.alias['name' as never]);
  assert.deepEqual(names('To: b@X.example'), ['b']);
  assert.deepEqual(names('To: z@z.example\r\nX-Original-To: old@y.example'), ['b']);
  assert.deepEqual(names('To: z@z.example'), ['a']);
  assert.deepEqual(names('To: a@x.example\r\nCc: "B" <b@x.example>'), ['a', 'b']);
  // [partition] unknown_recipient: the copy of mail for no alias is marked, mail for an alias is not.
  const marks = (h: string) => deliveryTargets(Buffer.from(h + '\r\n\r\n'), group).map((t) => t.unknownRecipient ?? false);
  assert.deepEqual(marks('To: z@z.example'), [true]);
  assert.deepEqual(marks('To: z@z.example\r\nX-Original-To: old@y.example'), [false]);
});
