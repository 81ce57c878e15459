/**
 * CCaaS mailbox settings of the retriever (issue 14), against a real Dovecot: lightweight
 * messages fetched in parallel with large ones ("Max email LW size"), "Auto connect retries"
 * and the "Deleted emails folder".
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import type { RetrieverHooks } from '../gateway/fetch/retriever.js';
import type { MailboxItem } from '../gateway/fetch/mailbox.js';
import type { Store } from '../storage/store.js';
import { fetchedKeys } from './helpers/test-store.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { retrieveFrom, type Incoming } from './helpers/retrieve.js';
import { closedPort } from './helpers/upstream.js';

const USERS = ['parallel', 'onerange', 'budget', 'deleted', 'expunged', 'pop3lw'];
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })) });
});
after(async () => {
  await dovecot?.stop();
});

/** A CRLF message of about BODY bytes, its subject naming it. */
function message(name: string, bodyBytes: number): Buffer {
  const head = [
    `From: customer@example.net`,
    'To: support@example.com',
    `Subject: ${name}`,
    `Message-ID: <${name}-${Date.now()}@example.net>`,
    'MIME-Version: 1.0',
  ];
  const line = `Line of ${name} `.padEnd(70, '.');
  const body: string[] = [];
  for (let size = 0; size < bodyBytes; size += line.length + 2) body.push(line);
  return Buffer.from(head.join('\r\n') + '\r\n\r\n' + body.join('\r\n') + '\r\n');
}

/** Delivers MESSAGES (name and body size) to USER's mailbox on SERVER in that order; returns each one's bytes by name. */
async function deliverAll(server: TestDovecot, user: string, messages: readonly (readonly [string, number])[]): Promise<Map<string, Buffer>> {
  const delivered = new Map<string, Buffer>();
  for (const [name, size] of messages) {
    const m = message(name, size);
    delivered.set(name, m);
    await server.deliver(user, m);
  }
  return delivered;
}

/** A retriever for one alias fetching USER's mailbox over IMAP (STARTTLS), polling once an hour unless told (test/helpers/retrieve.ts). */
const retrieve = (t: { after(fn: () => Promise<void>): void }, user: string, incoming: Incoming, hooks: RetrieverHooks = {}) =>
  retrieveFrom(dovecot, t, user, incoming, hooks);

/** Subjects of the stored messages, sorted, and each stored message's bytes compared with what was delivered. */
async function storedSubjects(store: Store, alias: string, delivered: Map<string, Buffer>): Promise<string[]> {
  const metas = await store.listMessages({ alias, limit: 1000 });
  for (const m of metas) {
    const chunks: Buffer[] = [];
    for await (const c of store.openRaw(m.id)) chunks.push(c as Buffer);
    assert.ok(delivered.get(m.subject ?? '')?.equals(Buffer.concat(chunks)), `bytes of ${m.subject} as delivered`);
  }
  return metas.map((m) => m.subject ?? '').sort();
}

/** Dovecot's login and logout lines for USER's sessions of PROTOCOL, in log order. */
async function sessionEvents(user: string, protocol: 'imap' | 'pop3'): Promise<('login' | 'logout')[]> {
  const lines = (await dovecot.readLog()).split('\n');
  return lines.flatMap((l): ('login' | 'logout')[] => {
    if (l.includes(`${protocol}-login: Info: Login: user=<${user}>`)) return ['login'];
    if (l.includes(`${protocol}(${user})`) && /Disconnected|Logged out/.test(l)) return ['logout'];
    return [];
  });
}

test('IMAP: small messages are fetched first; large ones still waiting after this session took one go over a second session; each stored exactly once', async (t) => {
  // Large ones first in the mailbox: mailbox order must not decide.
  const delivered = await deliverAll(dovecot, 'parallel', [
    ['large-1', 80_000],
    ['large-2', 80_000],
    ['small-1', 300],
    ['small-2', 300],
    ['small-3', 300],
    ['small-4', 300],
  ]);
  // With bytes_in_flight under their size, the large ones are streamed one at a time. The
  // first small message's post-store step holds its store until a large message is stored,
  // and the first large one's (its session streams nothing else meanwhile) until the other
  // large one is stored: only a second session can store it, so a poll on one session would
  // wait in vain and the test fail.
  const events: string[] = [];
  let largeStored!: () => void;
  const large = new Promise<void>((resolve) => (largeStored = resolve));
  let secondLargeStored!: () => void;
  const secondLarge = new Promise<void>((resolve) => (secondLargeStored = resolve));
  const waitedInVain: string[] = [];
  const waitFor = async (what: Promise<void>, name: string) => {
    const gaveUp = sleep(15_000, undefined, { ref: false }).then(() => waitedInVain.push(name));
    await Promise.race([what, gaveUp]);
  };
  const hooks: RetrieverHooks = {
    async afterStore(_alias: string, item: MailboxItem) {
      const kind = item.size > 10_000 ? 'large' : 'small';
      events.push(kind);
      const count = events.filter((e) => e === kind).length;
      if (kind === 'large' && count === 1) {
        largeStored();
        await waitFor(secondLarge, 'the second large message');
      } else if (kind === 'large') secondLargeStored();
      else if (count === 1) await waitFor(large, 'a large message');
    },
  };
  const r = await retrieve(t, 'parallel', { bytes_in_flight: 50_000 }, hooks);
  const [poll] = await r.waitForPolls(1, 40_000);
  assert.deepEqual(waitedInVain, [], `stored in order ${events.join(', ')}`);
  assert.deepEqual(poll, { stored: 6, finished: 0, deferred: 0, held: 0 });
  // Exactly once: one message and one fetched key per mailbox message, all moved once.
  assert.deepEqual(await storedSubjects(r.store, 'parallel', delivered), [...delivered.keys()].sort());
  assert.equal((await fetchedKeys(r.store)).length, 6);
  assert.deepEqual(await dovecot.listMessages('parallel'), []);
  assert.equal((await dovecot.listMessages('parallel', 'Processed')).length, 6);
  // Dovecot saw two IMAP sessions of the user open at once: the second logged in before any logged out.
  const sessions = await sessionEvents('parallel', 'imap');
  assert.deepEqual(sessions.slice(0, 2), ['login', 'login'], `Dovecot's sessions: ${sessions.join(', ')}\n${await dovecot.readLog()}`);
});

test('IMAP: a mailbox one range takes whole needs no second session', async (t) => {
  const delivered = await deliverAll(dovecot, 'onerange', [
    ['o-large-1', 40_000],
    ['o-small-1', 300],
    ['o-large-2', 40_000],
    ['o-small-2', 300],
  ]);
  const r = await retrieve(t, 'onerange', {});
  const [poll] = await r.waitForPolls(1);
  assert.deepEqual(poll, { stored: 4, finished: 0, deferred: 0, held: 0 });
  assert.deepEqual(await storedSubjects(r.store, 'onerange', delivered), [...delivered.keys()].sort());
  // Newest first: both small ones came before either large one.
  const subjects = (await r.store.listMessages({ alias: 'onerange' })).map((m) => m.subject);
  assert.deepEqual(subjects.slice(2).sort(), ['o-small-1', 'o-small-2'], `stored newest first: ${subjects.join(', ')}`);
  // LOGOUT is not waited for: its line is awaited in Dovecot's log, then the logins counted.
  for (let waited = 0; !(await sessionEvents('onerange', 'imap')).includes('logout') && waited < 10_000; waited += 50) await sleep(50);
  assert.deepEqual(await sessionEvents('onerange', 'imap'), ['login', 'logout'], 'one IMAP session');
});

test('IMAP: a server that allows one session per user (mail_max_userip_connections = 1) gets the large ones after the small ones on that session', async (t) => {
  const single = await startDovecot({
    users: [{ name: 'single', password: 'pw-single' }],
    extraConfig: 'protocol imap {\n  mail_max_userip_connections = 1\n}',
  });
  t.after(() => single.stop());
  // Large ones over bytes_in_flight, streamed one at a time: the second waits when the first is taken.
  const delivered = await deliverAll(single, 'single', [
    ['s-large-1', 40_000],
    ['s-small-1', 300],
    ['s-large-2', 40_000],
    ['s-small-2', 300],
  ]);
  // IDLE keeps the first session logged in after the poll, so the second login is refused
  // whenever it arrives (without IDLE the first may have logged out by then, and the second,
  // opened in parallel and no longer needed, would be let in).
  const r = await retrieve(t, 'single', { port: single.imapPort, idle: true, bytes_in_flight: 20_000 });
  const [poll] = await r.waitForPolls(1);
  assert.deepEqual(poll, { stored: 4, finished: 0, deferred: 0, held: 0 });
  // The second session is tried in parallel and not waited for once the first took everything,
  // so its refusal may be logged after the poll ended.
  const refusal = () => r.log.entries.find((e) => String(e.msg).startsWith('cannot open a second IMAP session'));
  for (let waited = 0; !refusal() && waited < 10_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(refusal(), 'the refusal is logged');
  assert.match(await single.readLog(), /mail_max_userip_connections/, 'Dovecot refused the second session');
  // Newest first: the large ones came last, on the one session.
  assert.deepEqual(
    (await r.store.listMessages({ alias: 'single' })).map((m) => m.subject),
    ['s-large-2', 's-large-1', 's-small-2', 's-small-1'],
  );
  assert.deepEqual(await storedSubjects(r.store, 'single', delivered), [...delivered.keys()].sort());
  assert.equal((await fetchedKeys(r.store)).length, 4);
  assert.equal((await single.listMessages('single', 'Processed')).length, 4);
  assert.equal((await r.store.getAliasState('single'))?.failures ?? 0, 0, 'not a failure of the alias');
});

test('IMAP: max_items counts the messages of both sessions; the rest follow at once, none stored twice', async (t) => {
  const delivered = await deliverAll(dovecot, 'budget', [
    ['b-large-1', 30_000],
    ['b-small-1', 300],
    ['b-large-2', 30_000],
    ['b-small-2', 300],
    ['b-large-3', 30_000],
    ['b-small-3', 300],
  ]);
  const r = await retrieve(t, 'budget', { max_items: 4 });
  const [first, second] = await r.waitForPolls(2);
  assert.deepEqual(first, { stored: 4, finished: 0, deferred: 2, held: 0 });
  assert.deepEqual(second, { stored: 2, finished: 0, deferred: 0, held: 0 });
  assert.deepEqual(await storedSubjects(r.store, 'budget', delivered), [...delivered.keys()].sort());
  assert.equal((await fetchedKeys(r.store)).length, 6);
  assert.equal((await dovecot.listMessages('budget', 'Processed')).length, 6);
});

test('POP3 (one session per mailbox): small messages are fetched before large ones on the one session', async (t) => {
  const delivered = await deliverAll(dovecot, 'pop3lw', [
    ['p-large', 40_000],
    ['p-small', 300],
  ]);
  const r = await retrieve(t, 'pop3lw', { type: 'pop3', port: dovecot.pop3Port });
  const [poll] = await r.waitForPolls(1);
  assert.deepEqual(poll, { stored: 2, finished: 0, deferred: 0, held: 0 });
  // Newest first: the large one was stored after the small one, though it came first in the mailbox.
  const metas = await r.store.listMessages({ alias: 'pop3lw' });
  assert.deepEqual(
    metas.map((m) => m.subject),
    ['p-large', 'p-small'],
  );
  assert.deepEqual(await storedSubjects(r.store, 'pop3lw', delivered), [...delivered.keys()].sort());
  assert.deepEqual(await dovecot.listMessages('pop3lw'), []);
  assert.deepEqual(await sessionEvents('pop3lw', 'pop3'), ['login', 'logout']);
});

test('deleted_folder: "delete" moves stored and invalid messages there instead of expunging them', async (t) => {
  await dovecot.deliver('deleted', message('d-ordinary', 300));
  // Over max_message_size: a record is stored and on_invalid applies.
  await dovecot.deliver('deleted', message('d-too-big', 8_000));
  const r = await retrieve(t, 'deleted', { on_stored: 'delete', on_invalid: 'delete', max_message_size: 5_000, deleted_folder: 'DeletedCCSPItems' });
  const [poll] = await r.waitForPolls(1);
  assert.deepEqual(poll, { stored: 2, finished: 0, deferred: 0, held: 0 });
  assert.deepEqual(await dovecot.listMessages('deleted'), [], 'gone from INBOX');
  assert.equal((await dovecot.listMessages('deleted', 'DeletedCCSPItems')).length, 2, 'both in the deleted folder');
  assert.deepEqual(await dovecot.listMessages('deleted', 'Processed'), []);
  const tags = (await r.store.listMessages({ alias: 'deleted' })).map((m) => m.tags.includes('oversize')).sort();
  assert.deepEqual(tags, [false, true]);
});

test('without deleted_folder, "delete" expunges: the message is in no folder', async (t) => {
  await dovecot.deliver('expunged', message('e-ordinary', 300));
  const r = await retrieve(t, 'expunged', { on_stored: 'delete' });
  await r.waitForPolls(1);
  assert.equal((await r.store.listMessages({ alias: 'expunged' })).length, 1);
  assert.deepEqual(await dovecot.listMessages('expunged'), []);
  assert.deepEqual(await dovecot.listMessages('expunged', 'DeletedCCSPItems'), []);
  assert.deepEqual(await dovecot.listMessages('expunged', 'Processed'), []);
});

test('auto_connect_retries: the alias turns inactive after that many failed connections in a row, not three', async (t) => {
  const port = await closedPort();
  const r = await retrieve(t, 'retries', { port, reconnect_interval: 1, health_retry_interval: 3600, auto_connect_retries: 2 });
  const entry = await r.log.waitFor((e) => typeof e.msg === 'string' && e.msg.startsWith('alias inactive after'), 20_000);
  assert.match(String(entry.msg), /^alias inactive after 2 failed connections/);
  const state = await r.store.getAliasState('retries');
  assert.equal(state?.status, 'inactive');
  assert.equal(state?.failures, 2);
});

test('config: defaults, and deleted_folder is refused for POP3 naming the key', () => {
  const base = ['[[alias]]', 'name = "p"', 'address = "p@example.com"', '[alias.incoming]', 'host = "127.0.0.1"'];
  const incoming = loadConfigText(base.join('\n'), 'mailgate.toml', {}).alias[0]!.incoming!;
  assert.equal(incoming.lightweight_size, 10_000);
  assert.equal(incoming.auto_connect_retries, 3);
  assert.equal(incoming.deleted_folder, undefined);
  assert.throws(
    () => loadConfigText([...base, 'type = "pop3"', 'deleted_folder = "Deleted"'].join('\n'), 'mailgate.toml', {}),
    (err: unknown) => err instanceof ConfigError && /alias\[0\]\.incoming\.deleted_folder/.test(err.message) && /POP3 has no folders/.test(err.message),
  );
  assert.throws(
    () => loadConfigText([...base, 'auto_connect_retries = 0'].join('\n'), 'mailgate.toml', {}),
    (err: unknown) => err instanceof ConfigError && /auto_connect_retries/.test(err.message),
  );
});
