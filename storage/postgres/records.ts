/**
 * The records beside the messages in PostgreSQL: the side records a message's commit writes
 * in its transaction, the outbound queue, alias states, fetched keys, OAuth token caches,
 * auto-reply claims and the audit log. Functions over a pool or a transaction's client;
 * PgStore (store.ts) serves the storage interface through them.
 *
 * Each write is one statement where it can be: a statement is a transaction of its own, all
 * or nothing, and durable when it returns (the pool keeps `synchronous_commit` on), so the
 * queue's and the retriever's writes need no BEGIN/COMMIT round trips of their own.
 */
import type pg from 'pg';
import { storeErrors } from '../../lib/errors.js';
import { idFloor, newMessageId } from '../ids.js';
import type { AliasState, AuditEntry, DeliveryRecord, FetchedKey, FetchedRecord, QueueEntry } from '../records.js';
import type { SideRecord } from '../store.js';

/** A pool, or the client of a transaction in progress. */
export type Db = pg.Pool | pg.PoolClient;

/** Rows a list iterable reads at a time: a bounded page, never the whole table, in memory. */
export const LIST_PAGE = 500;

/** What `listAudit` returns without a `limit` (the LevelDB store's default too). */
const DEFAULT_AUDIT_LIMIT = 100;

// The records go in as JSON text the application wrote (`json` columns keep it as given; see
// schema.ts), never through pg's own conversion, which turns a JS array into a PostgreSQL array.
const json = (value: unknown): string => JSON.stringify(value);

/**
 * Writes SIDE records inside transaction TX (begun by the caller, who commits): queue entries,
 * finished entries (the entry goes, `delivery` is set on the message's meta), quarantine
 * records, fetched keys (checking a record's `lease` against `mailbox_leases` for NODE).
 * In the order given, as the LevelDB store's batch does; a lost lease throws
 * `STORE_LEASE_LOST`, and the caller's rollback takes everything of the commit back.
 */
export async function applySideRecords(tx: pg.PoolClient, records: readonly SideRecord[], node: string): Promise<void> {
  // Leases checked in this commit: one message's copies for several recipients share one.
  const held = new Set<string>();
  for (const record of records) {
    switch (record.type) {
      case 'queue-entry':
        await upsertQueueEntries(tx, [record.entry]);
        break;
      case 'queue-finished':
        if (record.claimed) await assertClaimed(tx, record.id, node);
        await finishQueued(tx, record.id, record.delivery);
        break;
      case 'quarantine':
        // Its bytes are in quarantine_chunks already (the spool wrote them while the message streamed).
        await tx.query(
          `INSERT INTO quarantine (id, message, record) VALUES ($1, $2, $3::json)
           ON CONFLICT (id) DO UPDATE SET message = EXCLUDED.message, record = EXCLUDED.record`,
          [record.record.id, record.record.messageId, json(record.record)],
        );
        break;
      case 'fetched': {
        const lease = record.lease && `${record.lease.epoch} ${record.lease.mailbox}`;
        if (record.lease && lease && !held.has(lease)) {
          await holdLease(tx, record.lease.mailbox, record.lease.epoch, node);
          held.add(lease);
        }
        await upsertFetched(tx, record.key, record.record);
        break;
      }
    }
  }
}

/**
 * Throws STORE_LEASE_LOST unless NODE holds MAILBOX at EPOCH and the lease has not run out.
 * The row is locked FOR SHARE: a takeover (an UPDATE of the row) waits for this transaction's
 * commit, so no other node can fetch the mailbox between this check and the commit it guards.
 * `clock_timestamp()`, not `now()`: the time of the check, not of the transaction's start.
 */
async function holdLease(tx: pg.PoolClient, mailbox: string, epoch: number, node: string): Promise<void> {
  const { rowCount } = await tx.query(
    `SELECT 1 FROM mailbox_leases
     WHERE mailbox = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
     FOR SHARE`,
    [mailbox, node, epoch],
  );
  if (rowCount !== 1) throw storeErrors.leaseLost(mailbox, epoch);
}

// Outbound queue.

/** One statement for any number of entries: all or none. An id given twice: the last one stands, as in a LevelDB batch. */
async function upsertQueueEntries(db: Db, entries: readonly QueueEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const { sql, params } = queueUpsert(entries, 1);
  await db.query(sql, params);
}

/**
 * The upsert of ENTRIES as one SQL statement whose parameters are numbered from FIRST (so a
 * message's commit can make it a CTE of its own statement: message-writer.ts), with them.
 */
export function queueUpsert(entries: readonly QueueEntry[], first: number): { sql: string; params: unknown[] } {
  const last = [...new Map(entries.map((entry) => [entry.id, entry])).values()];
  // The claim columns are the dispatching node's, not the entry's: an update leaves them be.
  // Arrays in, not one JSON array taken apart by the server: PostgreSQL's own reading of the
  // JSON would refuse a NUL character anywhere in it (a server's reply in `lastError`).
  return {
    sql: `INSERT INTO queue (id, next_attempt_at, entry)
     SELECT * FROM unnest($${first}::text[], $${first + 1}::timestamptz[], $${first + 2}::json[])
     ON CONFLICT (id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at, entry = EXCLUDED.entry`,
    params: [last.map((e) => e.id), last.map((e) => e.nextAttemptAt), last.map(json)],
  };
}

// The message's metadata with `delivery` set to $2. json keeps its keys' order (the stages'
// findings, in the order they ran): rebuilt in order, delivery last.
const WITH_DELIVERY = `(
  SELECT json_object_agg(key, value ORDER BY n NULLS LAST)
  FROM (SELECT key, value, n FROM json_each(meta) WITH ORDINALITY AS e(key, value, n) WHERE key <> 'delivery'
        UNION ALL SELECT 'delivery', $2::json, NULL) AS kept
)`;

/**
 * Takes ID out of the queue and records DELIVERY on its message, if the message is still
 * there (the entry goes either way). One statement: the metadata is read and changed at the
 * commit, so a rewrite of it that committed meanwhile (a quarantine restore) is kept.
 */
async function finishQueued(db: Db, id: string, delivery: DeliveryRecord): Promise<void> {
  await db.query(
    `WITH finished AS (DELETE FROM queue WHERE id = $1)
     UPDATE messages SET meta = ${WITH_DELIVERY} WHERE id = $1`,
    [id, JSON.stringify(delivery, withoutNul)],
  );
}

/**
 * The same, only while NODE holds the entry's claim (a shared queue), in one statement: this
 * commit is what stands between the server's 250 and a second copy sent by the node that
 * takes a dead node's message over, so it costs one round trip, not a transaction's five.
 * Resolves true when it finished the entry (false: the claim is another node's, or it is gone).
 */
export async function finishClaimedQueued(db: Db, id: string, delivery: DeliveryRecord, node: string): Promise<boolean> {
  // A DELETE ... WHERE claimed_by waits on a row another node is claiming, then reads it again.
  const { rows } = await db.query<{ n: number }>(
    `WITH finished AS (DELETE FROM queue WHERE id = $1 AND claimed_by = $3 RETURNING id),
          recorded AS (UPDATE messages SET meta = ${WITH_DELIVERY} WHERE id IN (SELECT id FROM finished))
     SELECT count(*)::int AS n FROM finished`,
    [id, JSON.stringify(delivery, withoutNul), node],
  );
  return rows[0]?.n === 1;
}

/**
 * The metadata shows a NUL character as U+FFFD (message-row.ts: PostgreSQL's text cannot hold
 * one), and so does the record of a delivery: a NUL in a server's reply must never fail the
 * commit, which would leave the entry queued and send the message again.
 */
const withoutNul = (_key: string, value: unknown): unknown => (typeof value === 'string' ? value.replaceAll('\0', '\uFFFD') : value);

export async function putQueueEntries(db: pg.Pool, entries: readonly QueueEntry[]): Promise<void> {
  await upsertQueueEntries(db, entries);
}

export async function getQueueEntry(db: Db, id: string): Promise<QueueEntry | undefined> {
  const { rows } = await db.query<{ entry: QueueEntry }>('SELECT entry FROM queue WHERE id = $1', [id]);
  return rows[0]?.entry;
}

/** Oldest first: ids sort by time. One query: the caller gets every entry at once anyway, and so sees one moment of the queue. */
export async function listQueue(db: Db): Promise<QueueEntry[]> {
  const { rows } = await db.query<{ entry: QueueEntry }>('SELECT entry FROM queue ORDER BY id');
  return rows.map((row) => row.entry);
}

export async function finishQueueEntry(db: pg.Pool, id: string, delivery: DeliveryRecord, _node: string): Promise<void> {
  // The side record's statement on its own (no lease to check for a queue entry).
  await finishQueued(db, id, delivery);
}

// Alias health.

export async function getAliasState(db: Db, alias: string): Promise<AliasState | undefined> {
  const { rows } = await db.query<{ state: AliasState }>('SELECT state FROM alias_states WHERE alias = $1', [alias]);
  return rows[0]?.state;
}

export async function listAliasStates(db: Db): Promise<Record<string, AliasState>> {
  const { rows } = await db.query<{ alias: string; state: AliasState }>('SELECT alias, state FROM alias_states ORDER BY alias');
  const states: Record<string, AliasState> = {};
  for (const row of rows) states[row.alias] = row.state;
  return states;
}

/** Replaces the state whole (not merged): fields absent now are absent after. */
export async function putAliasState(db: Db, alias: string, state: AliasState): Promise<void> {
  await db.query(
    `INSERT INTO alias_states (alias, state) VALUES ($1, $2::json)
     ON CONFLICT (alias) DO UPDATE SET state = EXCLUDED.state`,
    [alias, json(state)],
  );
}

// The retriever's fetched keys.

async function upsertFetched(db: Db, key: FetchedKey, record: FetchedRecord): Promise<void> {
  await db.query(
    `INSERT INTO fetched (alias, key, record) VALUES ($1, $2, $3::json)
     ON CONFLICT (alias, key) DO UPDATE SET record = EXCLUDED.record`,
    [key.alias, key.key, json(record)],
  );
}

/** In the order asked, a key asked twice answered twice. */
export async function getFetched(db: Db, keys: readonly FetchedKey[]): Promise<(FetchedRecord | undefined)[]> {
  if (keys.length === 0) return [];
  const { rows } = await db.query<{ alias: string; key: string; record: FetchedRecord }>(
    `SELECT f.alias, f.key, f.record FROM fetched AS f
     JOIN (SELECT DISTINCT alias, key FROM unnest($1::text[], $2::text[]) AS k (alias, key)) AS k USING (alias, key)`,
    [keys.map((k) => k.alias), keys.map((k) => k.key)],
  );
  const found = new Map<string, FetchedRecord>();
  for (const row of rows) found.set(fetchedId(row), row.record);
  return keys.map((k) => found.get(fetchedId(k)));
}

/** A FetchedKey as one Map key; `\x00` cannot be in a PostgreSQL text value, so it separates. */
const fetchedId = (k: FetchedKey): string => `${k.alias}\x00${k.key}`;

/** On its own, with no lease to check: a write outside a message's commit (an over-size message's record). */
export async function putFetched(db: pg.Pool, key: FetchedKey, record: FetchedRecord, _node: string): Promise<void> {
  await upsertFetched(db, key, record);
}

export async function* listFetched(db: pg.Pool): AsyncIterable<{ key: FetchedKey; record: FetchedRecord }> {
  for await (const row of keysetPages<{ alias: string; key: string; record: FetchedRecord }>(db, 'SELECT alias, key, record FROM fetched', ['alias', 'key'])) {
    yield { key: { alias: row.alias, key: row.key }, record: row.record };
  }
}

// OAuth token caches.

export async function readTokenCache(db: Db, alias: string): Promise<Buffer | undefined> {
  const { rows } = await db.query<{ sealed: Buffer }>('SELECT sealed FROM token_caches WHERE alias = $1', [alias]);
  return rows[0]?.sealed;
}

export async function writeTokenCache(db: Db, alias: string, sealed: Buffer): Promise<void> {
  await db.query(
    `INSERT INTO token_caches (alias, sealed) VALUES ($1, $2)
     ON CONFLICT (alias) DO UPDATE SET sealed = EXCLUDED.sealed`,
    [alias, sealed],
  );
}

export async function* listTokenCaches(db: pg.Pool): AsyncIterable<{ alias: string; sealed: Buffer }> {
  yield* keysetPages<{ alias: string; sealed: Buffer }>(db, 'SELECT alias, sealed FROM token_caches', ['alias']);
}

// Auto-replies (RFC 3834 section 2: not more than one per sender per interval).

/**
 * The check and the record in one statement: the row is inserted, or updated only when its
 * last answer is before NOT_BEFORE. Two claims at once, from two connections or two nodes,
 * meet at the row's lock (the second waits, then sees the first's answer): exactly one is true.
 */
export async function claimAutoReply(db: Db, alias: string, sender: string, at: Date, notBefore: Date): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO auto_replies (alias, sender, at) VALUES ($1, $2, $3)
     ON CONFLICT (alias, sender) DO UPDATE SET at = EXCLUDED.at WHERE auto_replies.at < $4
     RETURNING 1`,
    // Lower-cased here, not by SQL lower(): the same letters as the LevelDB store's keys, whatever the database's locale.
    [alias, sender.toLowerCase(), at, notBefore],
  );
  return rowCount === 1;
}

export async function* listAutoReplies(db: pg.Pool): AsyncIterable<{ alias: string; sender: string; at: Date }> {
  yield* keysetPages<{ alias: string; sender: string; at: Date }>(db, 'SELECT alias, sender, at FROM auto_replies', ['alias', 'sender']);
}

// The audit log.

/** Keeps `entry.id` when given (`mailgate storage copy` brings the entries over as they were). */
export async function appendAudit(db: Db, entry: Omit<AuditEntry, 'id'> & { id?: string }): Promise<AuditEntry> {
  const stored: AuditEntry = { ...entry, id: entry.id ?? newMessageId() };
  await db.query(
    `INSERT INTO audit (id, entry) VALUES ($1, $2::json)
     ON CONFLICT (id) DO UPDATE SET entry = EXCLUDED.entry`,
    [stored.id, json(stored)],
  );
  return stored;
}

/** Newest first; `limit` Infinity: all of them; `since`: recorded at or after (ids carry the time); `before`: ids below it. */
export async function listAudit(db: Db, opts: { limit?: number; since?: Date; before?: string }): Promise<AuditEntry[]> {
  const limit = opts.limit ?? DEFAULT_AUDIT_LIMIT;
  if (!(limit >= 1)) return [];
  const params: unknown[] = [opts.since ? idFloor(opts.since) : ''];
  const bind = (value: unknown) => `$${params.push(value)}`;
  const below = opts.before !== undefined ? ` AND id < ${bind(opts.before)}` : '';
  const { rows } = await db.query<{ entry: AuditEntry }>(
    `SELECT entry FROM audit WHERE id >= $1${below} ORDER BY id DESC${Number.isFinite(limit) ? ` LIMIT ${bind(Math.floor(limit))}` : ''}`,
    params,
  );
  return rows.map((row) => row.entry);
}

export async function deleteAuditBefore(db: Db, before: Date): Promise<number> {
  const { rowCount } = await db.query('DELETE FROM audit WHERE id < $1', [idFloor(before)]);
  return rowCount ?? 0;
}

/**
 * The rows of SELECT (a whole table, no WHERE) in the order of KEYS, its primary key, a page
 * of LIST_PAGE at a time: each page starts after the last row of the one before, so memory
 * holds a page, and no cursor keeps a connection or a transaction open between pages.
 */
async function* keysetPages<Row extends pg.QueryResultRow>(db: Db, select: string, keys: readonly (keyof Row & string)[]): AsyncGenerator<Row> {
  const order = keys.join(', ');
  let after: unknown[] | undefined;
  for (;;) {
    const where = after ? `WHERE (${order}) > (${keys.map((_, i) => `$${i + 1}`).join(', ')})` : '';
    const { rows } = await db.query<Row>(`${select} ${where} ORDER BY ${order} LIMIT ${LIST_PAGE}`, after ?? []);
    yield* rows;
    const last = rows.at(-1);
    if (rows.length < LIST_PAGE || last === undefined) return;
    after = keys.map((k) => last[k]);
  }
}

/**
 * Rejects with `QUEUE_CLAIM_LOST` unless NODE holds the claim of queue entry ID (claimed by
 * another node meanwhile, or gone), inside transaction TX, whose row it locks until the commit:
 * a `queue-finished` side record with `claimed` (applySideRecords) checks it before writing.
 */
async function assertClaimed(tx: pg.PoolClient, id: string, node: string): Promise<void> {
  const { rowCount } = await tx.query('SELECT 1 FROM queue WHERE id = $1 AND claimed_by = $2 FOR UPDATE', [id, node]);
  if (rowCount !== 1) throw storeErrors.queueClaimLost(id);
}
