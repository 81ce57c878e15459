/**
 * The writable end of the PostgreSQL store for one message (storage/store.ts MessageWriter).
 *
 * A message that ends within one chunk (most mail) is written by its commit alone: one
 * transaction inserts its one chunk, its `messages` row and its side records (one statement
 * when it has none), with no mark to put and delete again. A bigger one puts an `unfinished` mark with its first chunk (one
 * statement, on the bytes pool: no flush of its own, see pool.ts), then each chunk as it
 * fills; its commit transaction inserts the last chunk and the row, applies the side records
 * and deletes the mark. A crash in between leaves the mark, and the sweep at open
 * (sweep.ts) removes the chunks under it.
 *
 * The commit deletes the marks it expects and checks they were there: a sweep that took them
 * (a process that swept this node's rows while we were writing) has taken the chunks too, and
 * the message must then fail rather than be stored short.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type pg from 'pg';
import type { MessageMeta } from '../records.js';
import type { MessageWriter as StoreMessageWriter, SideRecord } from '../store.js';
import { applySideRecords, queueUpsert } from './records.js';
import { Chunker } from './chunks.js';
import { MESSAGE_COLUMNS, messageRow } from './message-row.js';
import { inTransaction, type Pools } from './pool.js';
import { WriterLifecycle } from '../writer-lifecycle.js';

/** What a writer needs from its store. */
export interface WriterContext {
  pools: Pools;
  /** This node's name: its marks are its own to sweep. */
  node: string;
  /** Ids of messages whose quarantine spools put a `spool` mark (quarantine.ts): their commit deletes it. */
  spoolMarks: Set<string>;
  /** Commits begun and not yet settled: the store's close waits for them. */
  commits: Set<Promise<unknown>>;
  /** Chunk inserts and cleanups in flight: the store's close waits for them before ending the pools. */
  background: Set<Promise<unknown>>;
  /**
   * Ids of aborted messages whose rows could not be removed (the database was down): removed
   * after the next commit that works, so a running node does not keep them until it restarts.
   */
  leftovers: Set<string>;
}

const INSERT_MESSAGE = `INSERT INTO messages (${MESSAGE_COLUMNS.join(', ')}) VALUES (${MESSAGE_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`;
// The row and the last chunk (none for an empty message) in one statement: one round trip fewer per message.
const TAIL = MESSAGE_COLUMNS.length;
// WITH: more CTEs (a queue entry's upsert) may follow the tail's, all one statement.
const messageAndTail = (more = ''): string => `WITH tail AS (
  INSERT INTO message_chunks (message, generation, seq, data) SELECT $1, 0, $${TAIL + 1}, $${TAIL + 2}::bytea WHERE $${TAIL + 2}::bytea IS NOT NULL
)${more} ${INSERT_MESSAGE}`;
const INSERT_MESSAGE_AND_TAIL = messageAndTail();
const INSERT_CHUNK = 'INSERT INTO message_chunks (message, generation, seq, data) VALUES ($1, 0, $2, $3)';
// The first chunk carries the mark: no chunk of a message is ever stored without it.
const INSERT_FIRST_CHUNK = `WITH mark AS (
  INSERT INTO unfinished (id, kind, generation, node) VALUES ($1, 'message', 0, $4) ON CONFLICT DO NOTHING
) ${INSERT_CHUNK}`;

/** Tracks P in SET until it settles. */
export function track<T>(set: Set<Promise<unknown>>, p: Promise<T>): Promise<T> {
  set.add(p);
  const done = () => set.delete(p);
  p.then(done, done);
  return p;
}

/** The store's MessageWriter on PostgreSQL; see the module comment. */
export class PgMessageWriter extends Writable implements StoreMessageWriter {
  /** The id the message is stored under. */
  readonly id: string;
  readonly #ctx: WriterContext;
  readonly #chunker: Chunker;
  readonly #life: WriterLifecycle;
  #bytesWritten = 0;

  /** Use `store.createMessageWriter(id)`. */
  constructor(ctx: WriterContext, id: string) {
    super();
    this.#ctx = ctx;
    this.id = id;
    this.#life = new WriterLifecycle(id);
    this.#chunker = new Chunker((seq, data) =>
      track(
        ctx.background,
        ctx.pools.bytes.query(seq === 0 ? INSERT_FIRST_CHUNK : INSERT_CHUNK, seq === 0 ? [id, seq, data, ctx.node] : [id, seq, data]).then(() => {}),
      ),
    );
  }

  /** Bytes received so far; after `commit()`, the stored size. */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const refusal = this.#life.writeRefusal();
    if (refusal) {
      callback(refusal);
      return;
    }
    this.#bytesWritten += chunk.length;
    // Calls back at once while the chunk fills; after the previous insert when chunks pile up (backpressure).
    this.#chunker.add(chunk).then(
      () => callback(),
      (err: unknown) => callback(asError(err)),
    );
  }

  /**
   * Makes the message durable and visible: the last chunk, the `messages` row (with `size` set
   * to the bytes stored), the side records and the removal of the marks, in one transaction
   * with synchronous_commit on. Call after the stream has ended.
   */
  commit(meta: MessageMeta, sideRecords: readonly SideRecord[] = []): Promise<void> {
    return this.#life.commit(meta, this.writableEnded, this.#ctx.commits, () => this.#commit(meta, sideRecords));
  }

  async #commit(meta: MessageMeta, sideRecords: readonly SideRecord[]): Promise<void> {
    await finished(this);
    await this.#chunker.drain();
    const row = messageRow({ ...meta, size: this.#bytesWritten });
    const { pools, node, spoolMarks } = this.#ctx;
    const expected = [...(this.#chunker.seq > 0 ? ['message'] : []), ...(spoolMarks.has(this.id) ? ['spool'] : [])];
    const tail = this.#chunker.take();
    const insert = [...row, this.#chunker.seq, tail.length > 0 ? tail : null];
    const queued = sideRecords.flatMap((r) => (r.type === 'queue-entry' ? [r.entry] : []));
    if (expected.length === 0 && queued.length === sideRecords.length) {
      // One statement is a transaction of its own: a message with nothing else to write, or
      // only its queue entries (a relayed or submitted message), costs one round trip, not four.
      if (queued.length === 0) await pools.commits.query(INSERT_MESSAGE_AND_TAIL, insert);
      else {
        const upsert = queueUpsert(queued, insert.length + 1);
        await pools.commits.query(messageAndTail(`, queued AS (${upsert.sql})`), [...insert, ...upsert.params]);
      }
    } else {
      await inTransaction(pools.commits, async (tx) => {
        await tx.query(INSERT_MESSAGE_AND_TAIL, insert);
        if (expected.length > 0) await deleteMarks(tx, this.id, node, expected);
        // Records that belong to the message (its queue entry, its quarantined parts, its fetched key) become visible with it.
        if (sideRecords.length > 0) await applySideRecords(tx, sideRecords, node);
      });
    }
    spoolMarks.delete(this.id);
    if (this.#ctx.leftovers.size > 0) removeLeftovers(this.#ctx);
  }

  /**
   * Removes whatever chunks were written, the marks, and any parts the message quarantined.
   * Stops the stream if it is still open. Safe to call twice; refuses once `commit()` has begun.
   */
  abort(): Promise<void> {
    return this.#life.abort(async () => {
      await this.#removeWritten();
      this.#ctx.spoolMarks.delete(this.id);
    });
  }

  async #removeWritten(): Promise<void> {
    if (!this.destroyed) this.destroy();
    await this.#chunker.settle();
    this.#chunker.clear();
    const { spoolMarks, leftovers } = this.#ctx;
    // Nothing of ours is stored: no chunk was sent, and no commit was tried (its answer may have been lost with its connection).
    if (this.#chunker.seq === 0 && !spoolMarks.has(this.id) && !this.#life.commitTried) return;
    try {
      await removeAborted(this.#ctx, this.id);
    } catch (err) {
      leftovers.add(this.id);
      throw err;
    }
  }
}

/** Removes the rows of aborted message ID, unless its commit landed after all (its answer lost with its connection). */
async function removeAborted(ctx: WriterContext, id: string): Promise<void> {
  if ((await ctx.pools.commits.query('SELECT 1 FROM messages WHERE id = $1', [id])).rowCount) return;
  await track(ctx.background, removeUnfinished(ctx.pools.bytes, id));
}

/** Retries the removals that failed (see WriterContext.leftovers), one pass at a time, in the background. */
function removeLeftovers(ctx: WriterContext): void {
  const ids = [...ctx.leftovers];
  ctx.leftovers.clear();
  const pass = (async () => {
    for (const id of ids) await removeAborted(ctx, id).catch(() => ctx.leftovers.add(id));
  })();
  void track(ctx.background, pass);
}

/**
 * Deletes the marks of message ID of KINDS put by NODE inside TX; throws when one is missing
 * (swept meanwhile, with the bytes under it).
 */
export async function deleteMarks(tx: pg.PoolClient, id: string, node: string, kinds: readonly string[], generation = 0): Promise<void> {
  const { rows } = await tx.query<{ kind: string }>(
    'DELETE FROM unfinished WHERE id = $1 AND node = $2 AND generation = $3 AND kind = ANY($4) RETURNING kind',
    [id, node, generation, kinds],
  );
  const found = new Set(rows.map((r) => r.kind));
  const missing = kinds.filter((k) => !found.has(k));
  if (missing.length > 0) throw new Error(`message ${id}: its unfinished ${missing.join(' and ')} mark was swept while it was written; its bytes are gone`);
}

/**
 * Removes what an uncommitted message left: its chunks (every generation), the bytes of its
 * quarantine spools (`<id>.<n>`) and its marks, in one transaction.
 */
export async function removeUnfinished(db: pg.Pool | pg.PoolClient, id: string): Promise<void> {
  await db.query(
    `WITH chunks AS (DELETE FROM message_chunks WHERE message = $1),
          spools AS (DELETE FROM quarantine_chunks WHERE quarantine >= $1 || '.' AND quarantine < $1 || '/')
     DELETE FROM unfinished WHERE id = $1 AND kind IN ('message', 'spool')`,
    [id],
  );
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
