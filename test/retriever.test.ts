import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import type { RetrieverHooks } from '../gateway/fetch/retriever.js';
import type { Store } from '../storage/store.js';
import { fetchedKeys } from './helpers/test-store.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { retrieveFrom, type Incoming } from './helpers/retrieve.js';

// One mailbox user per test, so no test sees another's mail.
const USERS = ['starttls', 'imaps', 'pop3', 'keep', 'items', 'big', 'idle', 'crash', 'backlog-imap', 'backlog-pop3'];
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })) });
});
after(async () => {
  await dovecot?.stop();
});

/** A message with CRLF line ends (as IMAP and POP3 serve them), so stored bytes can be compared to delivered ones. */
function message(n: number, bodyBytes = 200): Buffer {
  const head = [
    `From: customer${n}@example.net`,
    'To: support@example.com',
    `Subject: Fetched ${n}`,
    `Message-ID: <fetch-${n}-${Date.now()}@example.net>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ];
  const line = `Line of message ${n} `.padEnd(70, '.');
  const body: string[] = [];
  for (let size = 0; size < bodyBytes; size += line.length + 2) body.push(line);
  return Buffer.from(head.join('\r\n') + '\r\n\r\n' + body.join('\r\n') + '\r\n');
}

/** `[alias.incoming]` keys; null leaves a key out, so its default applies. */

/** Runs a retriever for one alias fetching USER's mailbox (test/helpers/retrieve.ts). */
const retrieve = (t: { after(fn: () => Promise<void>): void }, user: string, incoming: Incoming, hooks: RetrieverHooks = {}, reuse?: Store) =>
  retrieveFrom(dovecot, t, user, incoming, hooks, reuse);

async function storedBytes(store: Store, alias: string): Promise<string[]> {
  const metas = await store.listMessages({ alias, limit: 1000 });
  const out: string[] = [];
  for (const m of metas) {
    const chunks: Buffer[] = [];
    for await (const c of store.openRaw(m.id)) chunks.push(c as Buffer);
    out.push(Buffer.concat(chunks).toString('latin1'));
  }
  return out.sort();
}

const sorted = (messages: Buffer[]) => messages.map((m) => m.toString('latin1')).sort();

test('IMAP over STARTTLS: each message stored once with its alias, bytes identical, moved to Processed', async (t) => {
  const sent = [message(1), message(2), message(3, 30_000)];
  for (const m of sent) await dovecot.deliver('starttls', m);
  const r = await retrieve(t, 'starttls', {});
  const [poll] = await r.waitForPolls(1);
  assert.deepEqual(poll, { stored: 3, finished: 0, deferred: 0, held: 0 });
  assert.deepEqual(await storedBytes(r.store, 'starttls'), sorted(sent));
  const metas = await r.store.listMessages({ alias: 'starttls' });
  assert.ok(metas.every((m) => m.source.kind === 'imap' && m.source.alias === 'starttls'));
  assert.deepEqual(await dovecot.listMessages('starttls'), []);
  assert.equal((await dovecot.listMessages('starttls', 'Processed')).length, 3);
  // One log line per fetched message, naming the alias.
  assert.equal(r.log.entries.filter((e) => e.msg === 'message fetched' && e.alias === 'starttls').length, 3);
  // No order among them: the 30 KB message downloads on its own session while the small ones
  // do (CCaaS lightweight size; test/retriever-lightweight.test.ts).
});

test('IMAP over TLS trusting ca_file', async (t) => {
  const sent = [message(10)];
  await dovecot.deliver('imaps', sent[0]!);
  const r = await retrieve(t, 'imaps', { security: 'tls', port: dovecot.imapsPort });
  await r.waitForPolls(1);
  assert.deepEqual(await storedBytes(r.store, 'imaps'), sorted(sent));
  assert.deepEqual(await dovecot.listMessages('imaps'), []);
  assert.equal((await dovecot.listMessages('imaps', 'Processed')).length, 1);
});

test('POP3 over STLS: stored once, bytes identical, deleted from the mailbox', async (t) => {
  const sent = [message(20), message(21, 20_000)];
  for (const m of sent) await dovecot.deliver('pop3', m);
  const r = await retrieve(t, 'pop3', { type: 'pop3', port: dovecot.pop3Port });
  await r.waitForPolls(1);
  assert.deepEqual(await storedBytes(r.store, 'pop3'), sorted(sent));
  const metas = await r.store.listMessages({ alias: 'pop3' });
  assert.ok(metas.every((m) => m.source.kind === 'pop3'));
  assert.deepEqual(await dovecot.listMessages('pop3'), []);
});

test('POP3 on_stored = "keep": UIDL tracking stores nothing twice on later polls', async (t) => {
  for (const m of [message(30), message(31)]) await dovecot.deliver('keep', m);
  const r = await retrieve(t, 'keep', { type: 'pop3', port: dovecot.pop3Port, on_stored: 'keep', poll_interval: 1 });
  const polls = await r.waitForPolls(3);
  assert.deepEqual(
    polls.slice(0, 3).map((p) => p.stored),
    [2, 0, 0],
  );
  assert.equal((await r.store.listMessages({ alias: 'keep' })).length, 2);
  assert.equal((await dovecot.listMessages('keep')).length, 2);
});

test('max_items bounds one poll, not the rate: a poll that stopped at it is followed by the next at once', async (t) => {
  for (let i = 0; i < 5; i++) await dovecot.deliver('items', message(40 + i));
  // poll_interval is an hour: only the polls that follow a full one at once can fetch the rest.
  const r = await retrieve(t, 'items', { max_items: 2 });
  const polls = await r.waitForPolls(3);
  assert.deepEqual(polls.slice(0, 3), [
    { stored: 2, finished: 0, deferred: 3, held: 0 },
    { stored: 2, finished: 0, deferred: 1, held: 0 },
    { stored: 1, finished: 0, deferred: 0, held: 0 },
  ]);
  assert.equal((await r.store.listMessages({ alias: 'items' })).length, 5);
  assert.deepEqual(await dovecot.listMessages('items'), []);
  assert.equal((await dovecot.listMessages('items', 'Processed')).length, 5);
  assert.equal(r.polls.length, 3, 'a poll that took everything waits poll_interval');
});

// Issue 11: 10,000 waiting messages took 3.3 hours with the defaults, one batch of 50 a minute.
for (const type of ['imap', 'pop3'] as const) {
  test(`${type.toUpperCase()} with the defaults (poll_interval 60, max_items 50): a backlog of 300 is all stored, well before a second poll interval`, async (t) => {
    const user = `backlog-${type}`;
    const count = 300;
    for (let n = 0; n < count; n++) await dovecot.deliver(user, message(1000 + n, 100));
    const defaults: Incoming = { poll_interval: null, max_items: null, idle: null, reconnect_interval: null };
    const r = await retrieve(t, user, type === 'imap' ? defaults : { ...defaults, type: 'pop3', port: dovecot.pop3Port });
    // One more poll interval would allow 60 s: at 50 a minute, 50 s would see 50 stored.
    const deadline = Date.now() + 50_000;
    let stored: number;
    while ((stored = (await r.store.listMessages({ alias: user, limit: 1000 })).length) < count) {
      assert.ok(Date.now() < deadline, `all ${count} stored before the deadline (${stored} so far, ${r.polls.length} polls)`);
      await sleep(200);
    }
    await r.stop();
    assert.deepEqual(
      r.polls.slice(0, 6).map((p) => p.stored),
      [50, 50, 50, 50, 50, 50],
    );
    const subjects = (await r.store.listMessages({ alias: user, limit: 1000 })).map((m) => m.subject);
    assert.equal(new Set(subjects).size, count, 'each stored once');
    assert.deepEqual(await dovecot.listMessages(user), []);
  });
}

test('a message over max_message_size is not fetched: a record with its headers, tagged oversize, and it goes to Invalid', async (t) => {
  await dovecot.deliver('big', message(50));
  await dovecot.deliver('big', message(51, 20_000));
  const r = await retrieve(t, 'big', { max_message_size: 5000 });
  await r.waitForPolls(1);
  const metas = await r.store.listMessages({ alias: 'big' });
  assert.equal(metas.length, 2);
  const record = metas.find((m) => m.tags.includes('oversize'));
  assert.ok(record, 'the over-size message has a record');
  assert.equal(record.subject, 'Fetched 51');
  assert.ok(record.size < 2000, `the record is small (${record.size} bytes)`);
  const [text] = await storedBytes(r.store, 'big').then((all) => all.filter((b) => b.includes('X-Mailgate-Oversize')));
  assert.match(text ?? '', /over the limit of 5000 bytes[\s\S]*moved to the folder "Invalid"/);
  assert.deepEqual(await dovecot.listMessages('big'), []);
  assert.equal((await dovecot.listMessages('big', 'Invalid')).length, 1);
  assert.equal((await dovecot.listMessages('big', 'Processed')).length, 1);
});

test('IMAP IDLE: mail delivered while idle arrives within seconds (poll interval one hour)', async (t) => {
  const r = await retrieve(t, 'idle', { idle: true });
  await r.waitForPolls(1);
  await sleep(1500); // let IDLE start (imapflow begins it after a second without commands)
  const sent = message(60);
  const at = Date.now();
  await dovecot.deliver('idle', sent);
  await r.waitForPolls(2, 8000);
  assert.ok(Date.now() - at < 8000);
  assert.deepEqual(await storedBytes(r.store, 'idle'), sorted([sent]));
  assert.deepEqual(await dovecot.listMessages('idle'), []);
});

test('exactly once: a crash between the store commit and the move stores nothing twice, and the move happens after restart', async (t) => {
  await dovecot.deliver('crash', message(70));
  let crashed = false;
  const first = await retrieve(
    t,
    'crash',
    {},
    {
      afterStore: () => {
        crashed = true;
        throw new Error('simulated crash after the commit');
      },
    },
  );
  const deadline = Date.now() + 10_000;
  while (!first.log.entries.some((e) => e.level === 50)) {
    if (Date.now() > deadline) throw new Error('no failure logged');
    await sleep(20);
  }
  await first.stop();
  assert.ok(crashed);
  const [stored] = await first.store.listMessages({ alias: 'crash' });
  assert.ok(stored);
  assert.equal((await fetchedKeys(first.store)).length, 1);
  assert.equal((await dovecot.listMessages('crash')).length, 1, 'still in INBOX: the move never happened');
  assert.equal(first.log.entries.find((e) => e.level === 50)?.alias, 'crash');

  const second = await retrieve(t, 'crash', {}, {}, first.store);
  const [poll] = await second.waitForPolls(1);
  assert.deepEqual(poll, { stored: 0, finished: 1, deferred: 0, held: 0 });
  const metas = await second.store.listMessages({ alias: 'crash' });
  assert.deepEqual(
    metas.map((m) => m.id),
    [stored.id],
  );
  assert.deepEqual(await dovecot.listMessages('crash'), []);
  assert.equal((await dovecot.listMessages('crash', 'Processed')).length, 1);
  const keys = await fetchedKeys(second.store);
  assert.ok(keys[0]?.startsWith('crash\x00'), keys[0]);
});

test('config: "move" is IMAP only, and the error names the key', () => {
  const toml = ['[[alias]]', 'name = "p"', 'address = "p@example.com"', '[alias.incoming]', 'type = "pop3"', 'host = "127.0.0.1"', 'on_stored = "move"'].join(
    '\n',
  );
  assert.throws(
    () => loadConfigText(toml, 'mailgate.toml', {}),
    (err: unknown) => err instanceof ConfigError && /alias\[0\]\.incoming\.on_stored/.test(err.message),
  );
  const ok = loadConfigText(toml.replace('on_stored = "move"', ''), 'mailgate.toml', {});
  assert.equal(ok.alias[0]?.incoming?.on_stored, 'delete');
  assert.equal(ok.alias[0]?.incoming?.on_invalid, 'keep');
});
