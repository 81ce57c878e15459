/**
 * The PostgreSQL records beside the messages (storage/postgres/records.ts) against a real
 * PostgreSQL: what the store contract cannot show through one connection. Auto-reply claims
 * racing on two connections, the mailbox lease that fences a fetched record (and the rollback
 * of the whole commit when it is lost), the queue leaving with its delivery recorded in one
 * commit, the list iterables past a page, and records coming back exactly as written.
 * Each test has a database of its own with the tables of migration 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout } from 'node:timers/promises';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import {
  LIST_PAGE,
  appendAudit,
  applySideRecords,
  claimAutoReply,
  deleteAuditBefore,
  finishQueueEntry,
  getAliasState,
  getFetched,
  getQueueEntry,
  listAliasStates,
  listAudit,
  listAutoReplies,
  listFetched,
  listQueue,
  listTokenCaches,
  putAliasState,
  putFetched,
  putQueueEntries,
  readTokenCache,
  writeTokenCache,
} from '../storage/postgres/records.js';
import { inTransaction } from '../storage/postgres/pool.js';
import { createIdGenerator, newMessageId } from '../storage/ids.js';
import type { AliasState, AuditEntry, DeliveryRecord, MessageMeta, QueueEntry } from '../storage/records.js';

let cluster: TestPostgres;

before(async () => {
  // Nothing here measures speed or survives a crash of the machine: fsync off spares the shared disk.
  cluster = await startPostgres({ fsync: false });
});
after(() => cluster?.stop());

const freshDatabase = () => cluster.createMailgateDatabase();
const openPool = (url: string) => cluster.pool(url);

/** A message row as the message tables' code writes it (only what these tests read back). */
async function insertMessage(db: pg.Pool | pg.PoolClient, id: string): Promise<MessageMeta> {
  const meta: MessageMeta = {
    id,
    version: 1,
    receivedAt: '2026-03-01T08:00:00.000Z',
    size: 3,
    receivedSize: 3,
    envelope: { mailFrom: 'sales@example.com', rcptTo: ['customer@example.org'] },
    source: { kind: 'submission', alias: 'sales' },
    to: ['customer@example.org'],
    cc: [],
    _AttachmentFileNames: [],
    attachments: [],
    findings: {},
    tags: [],
    direction: 'outbound',
  };
  await db.query(`INSERT INTO messages (id, received_at, alias, source_kind, size, meta) VALUES ($1, $2, 'sales', 'submission', 3, $3)`, [
    id,
    meta.receivedAt,
    JSON.stringify(meta),
  ]);
  return meta;
}

async function messageMeta(db: pg.Pool, id: string): Promise<MessageMeta | undefined> {
  const { rows } = await db.query<{ meta: MessageMeta }>('SELECT meta FROM messages WHERE id = $1', [id]);
  return rows[0]?.meta;
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

function minimalEntry(id: string): QueueEntry {
  return {
    id,
    kind: 'outbound',
    mailFrom: 'sales@example.com',
    requestedRecipients: ['customer@example.org'],
    recipients: [{ address: 'customer@example.org', status: 'pending', attempts: 0 }],
    queuedAt: '2026-03-01T08:00:00.000Z',
    attempts: 0,
    nextAttemptAt: '2026-03-01T08:00:00.000Z',
  };
}

const ORIGINAL = newMessageId();

/** Every optional field set, a NUL and non-ASCII text among them (a hostile server's reply). */
function fullEntry(id: string): QueueEntry {
  return {
    id,
    kind: 'quarantine',
    alias: 'sales',
    mailFrom: '',
    requestedRecipients: ['quarantine@example.com'],
    recipients: [
      {
        address: 'quarantine@example.com',
        status: 'delivered',
        attempts: 2,
        relay: 'downstream',
        last: { at: '2026-03-01T08:05:00.000Z', code: 250, message: '2.0.0 Ok: queued as ABC', permanent: false },
        deliveredAt: '2026-03-01T08:05:00.000Z',
        route: 'relay downstream',
      },
    ],
    queuedAt: '2026-03-01T08:00:00.000Z',
    attempts: 2,
    nextAttemptAt: '2026-03-01T08:10:00.123Z',
    lastAttemptAt: '2026-03-01T08:05:00.000Z',
    held: 'no route for quarantine@example.com',
    lastError: { at: '2026-03-01T08:01:00.000Z', message: 'greeting said \x00 and «ünïcödé»', permanent: false },
    dsn: true,
    quarantine: { original: ORIGINAL, reason: 'unparsable (header_nul: The message header has a NUL byte at offset 12)' },
  };
}

const delivered: DeliveryRecord = {
  kind: 'outbound',
  status: 'delivered',
  finishedAt: '2026-03-01T09:00:00.000Z',
  attempts: 1,
  recipients: [{ address: 'customer@example.org', status: 'delivered', attempts: 1, deliveredAt: '2026-03-01T09:00:00.000Z' }],
};

test('queue entries come back exactly as written, oldest first; a batch is all or none; the claim columns survive an update', async () => {
  const { pool } = await freshDatabase();
  const [a, b, c] = [newMessageId(), newMessageId(), newMessageId()];
  await putQueueEntries(pool, [fullEntry(b), minimalEntry(c)]);
  await inTransaction(pool, (tx) => applySideRecords(tx, [{ type: 'queue-entry', entry: minimalEntry(a) }], 'node-1'));
  assert.deepEqual(await getQueueEntry(pool, a), minimalEntry(a), 'no optional field appears');
  assert.deepEqual(await getQueueEntry(pool, b), fullEntry(b), 'every optional field, the NUL and the accents kept');
  assert.deepEqual(
    (await listQueue(pool)).map((e) => e.id),
    [a, b, c],
  );
  const { rows } = await pool.query<{ due: Date }>('SELECT next_attempt_at AS due FROM queue WHERE id = $1', [b]);
  assert.deepEqual(rows[0]?.due, new Date('2026-03-01T08:10:00.123Z'), 'next_attempt_at is the entry’s own');

  // One entry of the batch cannot be stored: none of it is.
  await assert.rejects(
    putQueueEntries(pool, [
      { ...minimalEntry(a), attempts: 5 },
      { ...minimalEntry(newMessageId()), nextAttemptAt: 'soon' },
    ]),
  );
  assert.equal((await getQueueEntry(pool, a))?.attempts, 0, 'the good entry of a failed batch was not written');
  assert.equal((await listQueue(pool)).length, 3);

  // The same id twice in one batch: the last stands, as in a LevelDB batch.
  await putQueueEntries(pool, [
    { ...minimalEntry(c), attempts: 1 },
    { ...minimalEntry(c), attempts: 2 },
  ]);
  assert.equal((await getQueueEntry(pool, c))?.attempts, 2);

  // A node's claim on an entry is the dispatcher's business: saving the entry after an attempt keeps it.
  await pool.query(`UPDATE queue SET claimed_by = 'node-1', claimed_until = now() + interval '1 minute' WHERE id = $1`, [c]);
  await putQueueEntries(pool, [{ ...minimalEntry(c), attempts: 3 }]);
  const claim = await pool.query<{ claimed_by: string | null }>('SELECT claimed_by FROM queue WHERE id = $1', [c]);
  assert.equal(claim.rows[0]?.claimed_by, 'node-1');
});

test('queue-finished removes the entry and records the delivery on the message in one commit', async () => {
  const { pool } = await freshDatabase();
  const id = newMessageId();
  const meta = await insertMessage(pool, id);
  await putQueueEntries(pool, [minimalEntry(id)]);
  const dsnId = newMessageId();

  const watcher = openPool(pool.options.connectionString!);
  await inTransaction(pool, async (tx) => {
    // A delivery status notification is stored and queued in the same commit.
    await insertMessage(tx, dsnId);
    await applySideRecords(
      tx,
      [
        { type: 'queue-entry', entry: { ...minimalEntry(dsnId), mailFrom: '', dsn: true } },
        { type: 'queue-finished', id, delivery: { ...delivered, status: 'failed', dsnId } },
      ],
      'node-1',
    );
    // Before the commit another connection sees neither change.
    assert.ok(await getQueueEntry(watcher, id), 'still queued for others until the commit');
    assert.deepEqual(await messageMeta(watcher, id), meta);
    assert.equal(await getQueueEntry(watcher, dsnId), undefined);
  });
  assert.equal(await getQueueEntry(watcher, id), undefined);
  assert.deepEqual(await messageMeta(watcher, id), { ...meta, delivery: { ...delivered, status: 'failed', dsnId } });
  assert.deepEqual(
    (await listQueue(watcher)).map((e) => e.id),
    [dsnId],
  );

  // A NUL in a server's reply cannot go into the jsonb metadata: it is shown as U+FFFD, and the message leaves the queue.
  const hostile = newMessageId();
  await insertMessage(pool, hostile);
  await putQueueEntries(pool, [minimalEntry(hostile)]);
  const reply = { at: '2026-03-01T09:00:00.000Z', code: 250, message: '2.0.0 Ok\x00 queued', permanent: false };
  await finishQueueEntry(pool, hostile, { ...delivered, recipients: [{ ...delivered.recipients[0]!, last: reply }] }, 'node-1');
  assert.equal(await getQueueEntry(pool, hostile), undefined);
  assert.equal((await messageMeta(pool, hostile))?.delivery?.recipients[0]?.last?.message, '2.0.0 Ok\uFFFD queued');

  // On its own (finishQueueEntry), and for an entry whose message is gone: the entry still goes.
  await finishQueueEntry(pool, dsnId, delivered, 'node-1');
  assert.deepEqual((await messageMeta(pool, dsnId))?.delivery, delivered);
  const orphan = newMessageId();
  await putQueueEntries(pool, [minimalEntry(orphan)]);
  await finishQueueEntry(pool, orphan, delivered, 'node-1');
  assert.deepEqual(await listQueue(pool), []);
  assert.equal(await messageMeta(pool, orphan), undefined, 'no message row is made for it');
});

test('a fetched record under a lease this node no longer holds rolls the whole commit back (STORE_LEASE_LOST)', async () => {
  const { pool } = await freshDatabase();
  const mailbox = 'imap:mail.example.com:993:sales@example.com:INBOX';
  const setLease = (holder: string, epoch: number, expires: string) =>
    pool.query(
      `INSERT INTO mailbox_leases (mailbox, holder, epoch, expires_at) VALUES ($1, $2, $3, now() + $4::interval)
       ON CONFLICT (mailbox) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch, expires_at = EXCLUDED.expires_at`,
      [mailbox, holder, epoch, expires],
    );
  /** Stores a message with its fetched record under lease epoch 7, as node-1. */
  const commitFetched = (id: string, key: string) =>
    inTransaction(pool, async (tx) => {
      await insertMessage(tx, id);
      await applySideRecords(tx, [{ type: 'fetched', key: { alias: 'sales', key }, record: { id }, lease: { mailbox, epoch: 7 } }], 'node-1');
    });

  const cases: [string, () => Promise<unknown>][] = [
    ['no lease recorded for the mailbox', async () => {}],
    ['another node holds it', () => setLease('node-2', 7, '1 minute')],
    ['this node held it at an older epoch (taken over and back since)', () => setLease('node-1', 8, '1 minute')],
    ['this node’s lease ran out', () => setLease('node-1', 7, '-1 second')],
  ];
  for (const [why, arrange] of cases) {
    await arrange();
    const id = newMessageId();
    await assert.rejects(commitFetched(id, `1700000000:${id}`), { code: 'STORE_LEASE_LOST', message: new RegExp(`${mailbox} \\(epoch 7\\)`) }, why);
    assert.equal(await messageMeta(pool, id), undefined, `${why}: the message of the commit is not there`);
    assert.deepEqual(await getFetched(pool, [{ alias: 'sales', key: `1700000000:${id}` }]), [undefined], `${why}: nor its fetched record`);
  }

  await setLease('node-1', 7, '1 minute');
  const id = newMessageId();
  await commitFetched(id, '1700000000:1');
  assert.ok(await messageMeta(pool, id));
  assert.deepEqual(await getFetched(pool, [{ alias: 'sales', key: '1700000000:1' }]), [{ id }]);
  // split_recipients: one mailbox message, a record per recipient's copy, under the one lease.
  const copies = ['1700000000:2#a@example.com', '1700000000:2#b@example.com'].map((key) => ({ alias: 'sales', key }));
  await inTransaction(pool, (tx) =>
    applySideRecords(
      tx,
      copies.map((key) => ({ type: 'fetched', key, record: { id }, lease: { mailbox, epoch: 7 } })),
      'node-1',
    ),
  );
  assert.deepEqual(await getFetched(pool, copies), [{ id }, { id }]);
});

test('a takeover of the mailbox waits for the commit that checked the lease', async () => {
  const { pool } = await freshDatabase();
  const mailbox = 'pop3:mail.example.com:995:sales@example.com';
  await pool.query(`INSERT INTO mailbox_leases (mailbox, holder, epoch, expires_at) VALUES ($1, 'node-1', 3, now() + interval '1 minute')`, [mailbox]);
  const tx = await pool.connect();
  try {
    await tx.query('BEGIN');
    await applySideRecords(tx, [{ type: 'fetched', key: { alias: 'sales', key: 'pop3:UIDL1' }, record: { id: 'X' }, lease: { mailbox, epoch: 3 } }], 'node-1');
    let takenOver = false;
    const takeover = pool.query(`UPDATE mailbox_leases SET holder = 'node-2', epoch = epoch + 1 WHERE mailbox = $1`, [mailbox]).then(() => (takenOver = true));
    // Wait until the takeover is seen waiting on the lock (or, wrongly, done), not for a set time.
    for (;;) {
      const { rows } = await pool.query(
        `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'UPDATE mailbox_leases%'`,
      );
      if (rows.length > 0 || takenOver) break;
      await setTimeout(10);
    }
    assert.equal(takenOver, false, 'the takeover waits');
    await tx.query('COMMIT');
    await takeover;
  } finally {
    tx.release();
  }
  assert.deepEqual(await getFetched(pool, [{ alias: 'sales', key: 'pop3:UIDL1' }]), [{ id: 'X' }], 'committed before the takeover');
  // From now on node-1's epoch is stale.
  await assert.rejects(
    inTransaction(pool, (t) =>
      applySideRecords(t, [{ type: 'fetched', key: { alias: 'sales', key: 'pop3:UIDL2' }, record: { id: 'Y' }, lease: { mailbox, epoch: 3 } }], 'node-1'),
    ),
    { code: 'STORE_LEASE_LOST' },
  );
});

test('two connections claiming the same auto-reply at once: exactly one is told to answer', async () => {
  const { url } = await freshDatabase();
  // Two pools: the claims certainly travel on different connections, as from two nodes.
  const [one, two] = [openPool(url), openPool(url)];
  const day = 24 * 3600_000;
  for (let round = 0; round < 40; round++) {
    const at = new Date(Date.UTC(2026, 2, 1) + round * 2 * day);
    const sender = round % 2 === 0 ? 'Ann@Example.org' : 'ann@example.org';
    const claims = await Promise.all([
      claimAutoReply(one, 'sales', sender, at, new Date(at.getTime() - day)),
      claimAutoReply(two, 'sales', sender.toUpperCase(), at, new Date(at.getTime() - day)),
    ]);
    assert.equal(claims.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(claims)}`);
  }
  // A fresh sender each round too: the race is then between two inserts, not two updates.
  for (let round = 0; round < 20; round++) {
    const at = new Date(Date.UTC(2026, 2, 1));
    const claims = await Promise.all([
      claimAutoReply(one, 'support', `new${round}@example.org`, at, new Date(at.getTime() - day)),
      claimAutoReply(two, 'support', `NEW${round}@example.org`, at, new Date(at.getTime() - day)),
    ]);
    assert.equal(claims.filter(Boolean).length, 1, `new sender ${round}: ${JSON.stringify(claims)}`);
  }
  const replies = await collect(listAutoReplies(one));
  assert.equal(replies.length, 21);
  assert.deepEqual(
    replies.find((r) => r.alias === 'sales'),
    { alias: 'sales', sender: 'ann@example.org', at: new Date(Date.UTC(2026, 2, 1) + 39 * 2 * day) },
    'lower-cased, the last answer’s time as a Date',
  );
});

test('alias states, fetched records, token caches and audit entries come back exactly as written', async () => {
  const { pool } = await freshDatabase();
  const inactive: AliasState = {
    status: 'inactive',
    failures: 3,
    lastError: 'NO [AUTHENTICATIONFAILED] \x00 bad',
    lastErrorKind: 'auth',
    reason: 'the mailbox refused the login',
    changedAt: '2026-03-01T08:00:00.000Z',
    changedBy: 'retriever',
    retryAt: '2026-03-01T09:00:00.000Z',
    configHash: 'abc',
  };
  const active: AliasState = { status: 'active', failures: 0, changedAt: '2026-03-01T10:00:00.000Z', changedBy: 'admin' };
  assert.equal(await getAliasState(pool, 'sales'), undefined);
  await putAliasState(pool, 'sales', inactive);
  await putAliasState(pool, 'support', active);
  assert.deepEqual(await getAliasState(pool, 'sales'), inactive);
  assert.deepEqual(await listAliasStates(pool), { sales: inactive, support: active });
  await putAliasState(pool, 'sales', active);
  assert.deepEqual(await getAliasState(pool, 'sales'), active, 'replaced whole');

  const id = newMessageId();
  await putFetched(pool, { alias: 'sales', key: 'pop3:0001' }, { id, invalid: true }, 'node-1');
  await inTransaction(pool, (tx) =>
    applySideRecords(tx, [{ type: 'fetched', key: { alias: 'sales', key: '17:1#billing@example.com' }, record: { id } }], 'node-1'),
  );
  assert.deepEqual(
    await getFetched(pool, [
      { alias: 'sales', key: '17:1#billing@example.com' },
      { alias: 'support', key: 'pop3:0001' },
      { alias: 'sales', key: 'pop3:0001' },
      { alias: 'sales', key: '17:1#billing@example.com' },
    ]),
    [{ id }, undefined, { id, invalid: true }, { id }],
    'in the order asked, a key asked twice answered twice, `invalid` only where it was set',
  );

  const sealed = Buffer.concat([Buffer.from([0, 0, 0xff, 0x5c, 0x27]), randomBytes(4000)]);
  await writeTokenCache(pool, 'sales', sealed);
  assert.ok((await readTokenCache(pool, 'sales'))?.equals(sealed), 'byte for byte');
  await writeTokenCache(pool, 'sales', Buffer.alloc(0));
  assert.deepEqual(await readTokenCache(pool, 'sales'), Buffer.alloc(0), 'replaced, even by nothing');
  assert.equal(await readTokenCache(pool, 'support'), undefined);

  // A failed sign-in records what the caller claimed to be: a NUL in it must not stop the write.
  const signIn = await appendAudit(pool, { at: '2026-03-01T10:00:00.000Z', who: 'user ev\x00l', action: 'sign-in', from: '192.0.2.1', outcome: 'AUTH_FAILED' });
  const copied: AuditEntry = {
    id: newMessageId(),
    at: '2026-03-01T10:00:01.000Z',
    who: 'user alice',
    action: 'restore',
    target: 'Q1.1',
    from: '::1',
    outcome: 'ok',
  };
  assert.deepEqual(await appendAudit(pool, copied), copied, 'a given id is kept (storage copy)');
  assert.deepEqual(await listAudit(pool, {}), [copied, signIn]);
  assert.equal('target' in signIn, false);
  assert.equal('target' in (await listAudit(pool, {}))[1]!, false, 'an absent target stays absent');
});

test('the list iterables read past a page; the audit log lists, limits and deletes by time', async () => {
  const { pool } = await freshDatabase();
  // Two full pages and one more row: the last page is short. Written in bulk by SQL, read by the iterables.
  const count = 2 * LIST_PAGE + 1;
  await pool.query(
    `INSERT INTO fetched (alias, key, record) SELECT 'a' || (n % 3), lpad(n::text, 5, '0'), json_build_object('id', 'M' || n) FROM generate_series(1, $1) AS n`,
    [count],
  );
  await pool.query(`INSERT INTO token_caches (alias, sealed) SELECT 'alias' || n, int4send(n) FROM generate_series(1, $1) AS n`, [count]);
  await pool.query(
    `INSERT INTO auto_replies (alias, sender, at) SELECT 'a' || (n % 2), 's' || n || '@example.org', timestamptz '2026-03-01T00:00:00Z' + n * interval '1 ms' FROM generate_series(1, $1) AS n`,
    [count],
  );
  const fetched = await collect(listFetched(pool));
  assert.equal(fetched.length, count);
  assert.equal(new Set(fetched.map((f) => `${f.key.alias} ${f.key.key}`)).size, count, 'no row twice');
  assert.deepEqual(
    fetched.find((f) => f.key.key === '01000'),
    { key: { alias: 'a1', key: '01000' }, record: { id: 'M1000' } },
  );
  const caches = await collect(listTokenCaches(pool));
  assert.equal(caches.length, count);
  assert.deepEqual(new Set(caches.map((c) => c.sealed.readInt32BE(0))).size, count);
  assert.ok(caches.every((c) => c.alias === `alias${c.sealed.readInt32BE(0)}`));
  const replies = await collect(listAutoReplies(pool));
  assert.equal(replies.length, count);
  const last = replies.find((r) => r.sender === `s${count}@example.org`);
  assert.deepEqual(last, { alias: `a${count % 2}`, sender: `s${count}@example.org`, at: new Date(Date.UTC(2026, 2, 1) + count) });
  // Exactly two pages: the third read finds nothing and ends the iteration.
  await pool.query('DELETE FROM token_caches WHERE alias = $1', [`alias${count}`]);
  assert.equal((await collect(listTokenCaches(pool))).length, 2 * LIST_PAGE);

  // More than the default limit of 100 entries.
  const entries: AuditEntry[] = [];
  for (let i = 0; i < 120; i++)
    entries.push(
      await appendAudit(pool, { at: new Date().toISOString(), who: 'user alice', action: 'retry', target: `q${i}`, from: '127.0.0.1', outcome: 'ok' }),
    );
  const newestFirst = [...entries].reverse();
  assert.deepEqual(await listAudit(pool, {}), newestFirst.slice(0, 100));
  assert.deepEqual(await listAudit(pool, { limit: Infinity }), newestFirst);
  assert.deepEqual(await listAudit(pool, { limit: 2.5 }), newestFirst.slice(0, 2));
  assert.deepEqual(await listAudit(pool, { limit: 0 }), []);
  assert.deepEqual(await listAudit(pool, { since: new Date(Date.now() + 60_000), limit: Infinity }), []);
  // Entries copied from another store keep their (older) ids: `since` and deletion go by them.
  const old = {
    id: createIdGenerator(() => Date.UTC(2025, 0, 1))(),
    at: '2025-01-01T00:00:00.000Z',
    who: 'user bob',
    action: 'drop',
    from: '::1',
    outcome: 'ok',
  };
  await appendAudit(pool, old);
  assert.equal((await listAudit(pool, { since: new Date(Date.UTC(2026, 0, 1)), limit: Infinity })).length, 120);
  assert.deepEqual((await listAudit(pool, { limit: Infinity })).at(-1), old);
  assert.equal(await deleteAuditBefore(pool, new Date(Date.UTC(2026, 0, 1))), 1);
  assert.equal(await deleteAuditBefore(pool, new Date(Date.UTC(2026, 0, 1))), 0);
  assert.equal(await deleteAuditBefore(pool, new Date(Date.now() + 60_000)), 120);
  assert.deepEqual(await listAudit(pool, {}), []);
});
