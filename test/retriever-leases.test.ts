/**
 * The retriever with mailbox leases (issue 16, "Several nodes: Fetching"): real Dovecot
 * mailboxes, and leases in a real PostgreSQL shared by two retrievers, each with a LevelDB
 * store of its own standing in for the shared PostgreSQL store (PgStore comes at the merge;
 * LevelDB does not fence records, so what these tests show is the retriever's own part:
 * which mailboxes it fetches, and no move or delete without the lease).
 *
 * @store-pinned: it opens LevelDB and a PostgreSQL of its own by name.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import pg from 'pg';
import { loadConfigText } from '../gateway/config/load.js';
import { startRetriever, type RetrieverHooks } from '../gateway/fetch/retriever.js';
import { openStore } from '../storage/open.js';
import { PgLeases } from '../storage/postgres/leases.js';
import type { Leases, Store } from '../storage/store.js';
import { dovecotIncoming, ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { capturingLogger } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { waitUntil } from './helpers/wait.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';

const USERS = ['share-one', 'share-two', 'fence'];
let dovecot: TestDovecot;
let postgres: TestPostgres;

before(async () => {
  await ensureDovecot();
  [dovecot, postgres] = await Promise.all([startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })) }), startPostgres({ fsync: false })]);
});
after(async () => {
  await dovecot?.stop();
  await postgres?.stop();
});

function message(user: string, n: number): Buffer {
  return Buffer.from(
    [
      `From: customer${n}@example.net`,
      `To: ${user}@example.com`,
      `Subject: ${user} ${n}`,
      `Message-ID: <${user}-${n}-${Date.now()}@example.net>`,
      '',
      `Body ${n}`,
      '',
    ].join('\r\n'),
  );
}

/** A fresh database with the schema. */
async function leaseDatabase(): Promise<pg.Pool> {
  return (await postgres.createMailgateDatabase(6)).pool;
}

/** STORE, with LEASES in place of its own. */
function withLeases(store: Store, leases: Leases): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'leases') return leases;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  }) as Store;
}

/** A node: a retriever with a store of its own, fetching USERS' mailboxes (one alias each, named as the user) under leases on POOL. */
async function startNode(t: { after(fn: () => Promise<void>): void }, pool: pg.Pool, name: string, users: readonly string[], hooks: RetrieverHooks = {}) {
  const { dir, cleanup } = await tempDir();
  const toml = [
    `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
    '[retriever]',
    'lease_ttl = "3s"',
    ...users.flatMap((user) => [
      '[[alias]]',
      `name = "${user}"`,
      `address = "${user}@example.com"`,
      ...dovecotIncoming(dovecot, user, { password: `pw-${user}` }),
      'poll_interval = 1',
      'reconnect_interval = 1',
      'idle = false',
    ]),
  ].join('\n');
  const config = loadConfigText(toml, path.join(dir, 'mailgate.toml'), {});
  // LevelDB by name on either test store: each node has a store of its own and the leases alone
  // are shared (PgLeases on POOL); a PostgreSQL store would check fetched records against its own
  // lease table, not POOL's. Nodes sharing a PostgreSQL store: fleet-fetch.test.ts.
  const level = await openStore(config.data_dir);
  const store = withLeases(level, new PgLeases(pool, name));
  const log = capturingLogger();
  // The node's name on every line, as `serve`'s logger puts it (lib/logger.ts).
  const retriever = startRetriever({ config, store, logger: log.logger.child({ node: name }), stages: () => [], hooks });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await retriever.stop();
  };
  t.after(async () => {
    await stop();
    await level.close();
    await cleanup();
  });
  return { store: level, retriever, log, stop };
}

const subjects = async (store: Store, alias: string) => (await store.listMessages({ alias, limit: 1000 })).map((m) => m.subject ?? '').sort();

test('two nodes share two mailboxes: each fetches one, every message is stored once, and new mail goes to the node holding its mailbox', async (t) => {
  const pool = await leaseDatabase();
  for (const user of ['share-one', 'share-two']) for (let n = 1; n <= 3; n++) await dovecot.deliver(user, message(user, n));
  const users = ['share-one', 'share-two'];
  const a = await startNode(t, pool, 'node-a', users);
  // Alone, A takes both mailboxes.
  await waitUntil('node-a to fetch both mailboxes', () => a.retriever.aliases.length === 2);
  // and empties them before B joins: the two stores here are separate, so a message A stored
  // but had not yet moved when it gave the mailbox back would be fetched again by B, whose store
  // holds no record of it (nodes sharing a store only finish such a message: fleet-fetch.test.ts).
  await waitUntil('node-a to empty both mailboxes', async () => (await Promise.all(users.map((u) => dovecot.listMessages(u)))).every((m) => m.length === 0));
  const b = await startNode(t, pool, 'node-b', users);
  // B joins: A gives one back at its next round, and B takes it.
  await waitUntil('each node to fetch one mailbox', () => a.retriever.aliases.length === 1 && b.retriever.aliases.length === 1);
  assert.notDeepEqual(a.retriever.aliases, b.retriever.aliases);
  const given = a.log.entries.find((e) => e.msg === 'mailbox lease given back so another node gets its share; this node stops fetching it')!;
  assert.equal(given.node, 'node-a');
  const taken = b.log.entries.find((e) => e.msg === 'mailbox lease taken: this node fetches it')!;
  assert.deepEqual([taken.mailbox, taken.alias, taken.node], [given.mailbox, given.alias, 'node-b']);
  assert.ok((taken.epoch as number) > (given.epoch as number), 'a new holder, a higher epoch');

  // New mail: each mailbox's goes to the node holding it.
  for (const user of users) for (let n = 4; n <= 5; n++) await dovecot.deliver(user, message(user, n));
  await waitUntil('both mailboxes emptied', async () => (await Promise.all(users.map((u) => dovecot.listMessages(u)))).every((m) => m.length === 0));
  for (const user of users) {
    const both = [...(await subjects(a.store, user)), ...(await subjects(b.store, user))].sort();
    assert.deepEqual(
      both,
      [1, 2, 3, 4, 5].map((n) => `${user} ${n}`),
      `${user}: each message stored once over both nodes`,
    );
  }
  const holder = b.retriever.aliases[0]!;
  const late = [...(await subjects(b.store, holder))];
  assert.ok(late.includes(`${holder} 4`) && late.includes(`${holder} 5`), `B stored the new mail of the mailbox it holds: ${late.join(', ')}`);

  // A shuts down: its mailbox goes back at once, and B fetches both.
  await a.stop();
  assert.ok(a.log.entries.some((e) => e.msg === 'mailbox lease released' && e.node === 'node-a'));
  await waitUntil('node-b to fetch both mailboxes', () => b.retriever.aliases.length === 2);
});

test('a lease lost mid-poll: the stored messages are neither moved nor deleted, the worker stops without a failure counted; the next holder only finishes them', async (t) => {
  const pool = await leaseDatabase();
  for (let n = 1; n <= 3; n++) await dovecot.deliver('fence', message('fence', n));
  let stolen = false;
  const node = await startNode(t, pool, 'paused', ['fence'], {
    // Another node takes the mailbox while this one is storing (as after a pause past the lease time).
    async afterStore() {
      if (stolen) return;
      stolen = true;
      await pool.query(`UPDATE mailbox_leases SET holder = 'other', epoch = epoch + 1, expires_at = now() + interval '1 hour'`);
    },
  });
  await node.log.waitFor((e) => e.msg === 'messages stored are not moved or deleted: this node no longer holds the mailbox lease', 20_000);
  await waitUntil('the node to fetch no mailbox', () => node.retriever.aliases.length === 0);
  assert.ok(
    node.log.entries.some((e) => typeof e.msg === 'string' && e.msg.startsWith('mailbox lease lost') && e.node === 'paused' && e.level === 40),
    'the loss is logged as a warning',
  );
  assert.equal((await dovecot.listMessages('fence')).length, 3, 'every message still in the mailbox');
  const stored = (await subjects(node.store, 'fence')).length;
  assert.ok(stored >= 1, 'at least the message being stored when the lease went');
  const state = await node.store.getAliasState('fence');
  assert.equal(state?.failures ?? 0, 0, 'not counted against the alias');

  // The other node gives it back: this one takes it anew, finishes what it stored and fetches the rest, each once.
  await pool.query(`UPDATE mailbox_leases SET holder = NULL, expires_at = NULL`);
  await waitUntil('the mailbox emptied', async () => (await dovecot.listMessages('fence')).length === 0);
  assert.deepEqual(await subjects(node.store, 'fence'), ['fence 1', 'fence 2', 'fence 3']);
  const retaken = node.log.entries.filter((e) => e.msg === 'mailbox lease taken: this node fetches it');
  assert.deepEqual(
    retaken.map((e) => e.epoch),
    [1, 3],
  );
});
