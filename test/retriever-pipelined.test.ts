import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import type { Store } from '../storage/store.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { retrieveFrom } from './helpers/retrieve.js';

// The pipelined fetch (issue 15): ranges of messages on the wire at once, bytes in memory bounded.
const USERS = ['bound', 'peek', 'shared'];
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })) });
});
after(async () => {
  await dovecot?.stop();
});

/** A message of about BYTES with CRLF line ends, so stored bytes can be compared to delivered ones. */
function message(n: number, bytes: number, to = 'support@example.com'): Buffer {
  const head = `From: customer${n}@example.net\r\nTo: ${to}\r\nSubject: Pipelined ${n}\r\nMessage-ID: <pipelined-${n}@example.net>\r\n\r\n`;
  const line = `Line of message ${n} `.padEnd(70, '.') + '\r\n';
  return Buffer.from(head + line.repeat(Math.max(1, Math.round((bytes - head.length) / line.length))));
}

async function storedBytes(store: Store, alias: string): Promise<string[]> {
  const out: string[] = [];
  for (const m of await store.listMessages({ alias, limit: 1000 })) {
    const chunks: Buffer[] = [];
    for await (const c of store.openRaw(m.id)) chunks.push(c as Buffer);
    out.push(Buffer.concat(chunks).toString('latin1'));
  }
  return out.sort();
}

const sorted = (messages: Buffer[]) => messages.map((m) => m.toString('latin1')).sort();

test('bytes_in_flight bounds the fetched bytes in memory; messages bigger than it still all arrive, streamed one at a time', async (t) => {
  const bound = 64 * 1024;
  // Small ones several of which fit the bound, and big ones over it, interleaved.
  const sent = Array.from({ length: 40 }, (_, n) => message(n, n % 5 === 4 ? 150_000 : 12_000));
  for (const m of sent) await dovecot.deliver('bound', m);
  const seen: number[] = [];
  const { store, waitForPolls, polls } = await retrieveFrom(
    dovecot,
    t,
    'bound',
    { bytes_in_flight: bound, max_items: 100, lightweight_size: 20_000 },
    { bytesInFlight: (_alias, bytes) => seen.push(bytes) },
  );
  await waitForPolls(1, 60_000);
  assert.equal(polls[0]!.stored, sent.length, 'every message stored in one poll');
  assert.deepEqual(await storedBytes(store, 'bound'), sorted(sent), 'each stored once, bytes identical');
  assert.equal((await dovecot.listMessages('bound', 'Processed')).length, sent.length, 'all moved to Processed');
  assert.ok(seen.length > 0, 'the small messages went through the budget');
  const most = Math.max(...seen);
  assert.ok(most <= bound, `at most ${bound} bytes held at once, saw ${most}`);
  assert.equal(seen.at(-1), 0, 'everything held is given back');
});

test('a range is read with BODY.PEEK: with on_stored = "keep" the messages stay unread in INBOX', async (t) => {
  const sent = Array.from({ length: 12 }, (_, n) => message(100 + n, 3_000));
  for (const m of sent) await dovecot.deliver('peek', m);
  const { store, waitForPolls } = await retrieveFrom(dovecot, t, 'peek', { on_stored: 'keep' });
  await waitForPolls(1);
  assert.deepEqual(await storedBytes(store, 'peek'), sorted(sent));
  const names = await dovecot.listMessages('peek');
  assert.equal(names.length, sent.length, 'kept in INBOX');
  // Maildir keeps the flags in the file name after ":2,"; S is \Seen.
  assert.deepEqual(
    names.filter((n) => /:2,[A-Z]*S/.test(n)),
    [],
    'none marked \\Seen',
  );
});

test('a shared mailbox read in ranges: each message goes to the aliases its own headers name', async (t) => {
  const sent = Array.from({ length: 30 }, (_, n) =>
    message(200 + n, 2_000 + n * 500, n % 3 === 0 ? 'shared@example.com, sales@example.com' : 'sales@example.com'),
  );
  for (const m of sent) await dovecot.deliver('shared', m);
  // `shared` leads; `sales` names the same mailbox, so the retriever reads each message's headers to choose.
  const { store, waitForPolls } = await retrieveFrom(dovecot, t, 'shared', {}, {}, undefined, ['sales']);
  await waitForPolls(1);
  const forShared = await storedBytes(store, 'shared');
  const forSales = await storedBytes(store, 'sales');
  assert.deepEqual(forSales, sorted(sent), 'every message for sales');
  assert.deepEqual(forShared, sorted(sent.filter((_, n) => n % 3 === 0)), 'only those addressed to shared as well');
});

test('config: bytes_in_flight is a positive number of bytes, per mailbox and for the retriever', () => {
  const base = [
    '[[alias]]',
    'name = "a"',
    'address = "a@example.com"',
    '[alias.incoming]',
    'type = "imap"',
    'host = "127.0.0.1"',
    'user = "a"',
    'password = "p"',
  ];
  const load = (lines: string[]) => loadConfigText(lines.join('\n'), path.join('/tmp', 'mailgate.toml'), {});
  const defaults = load(base);
  assert.equal(defaults.alias[0]!.incoming!.bytes_in_flight, 8 * 1024 * 1024);
  assert.equal(defaults.retriever.bytes_in_flight, 64 * 1024 * 1024);
  assert.throws(
    () => load([...base, 'bytes_in_flight = 0']),
    (err: unknown) => err instanceof ConfigError && /alias\[0\]\.incoming\.bytes_in_flight/.test(err.message) && /positive integer \(bytes\)/.test(err.message),
  );
  assert.throws(
    () => load(['[retriever]', 'bytes_in_flight = "64M"', ...base]),
    (err: unknown) => err instanceof ConfigError && /retriever\.bytes_in_flight/.test(err.message),
  );
});
