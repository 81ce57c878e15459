/**
 * Deleting for good on PostgreSQL (the storage interface's retention methods): a message with
 * everything stored for it in one transaction (its row, every generation of its chunks, its
 * quarantined attachments and their bytes), never one still in the outbound queue. Fetched-key
 * records stay (store.ts explains why). The row is locked first, so a rewrite's swap waits for
 * the deletion and then finds the message gone (rewrite.ts).
 */
import type pg from 'pg';
import type { MessageMeta } from '../records.js';
import type { DeletedMessages } from '../store.js';
import { storeErrors } from '../../lib/errors.js';
import { idFloor } from '../ids.js';
import { storable } from './message-row.js';
import { inTransaction } from './pool.js';

// Messages deleted per transaction by a sweep: one commit per message would make a sweep of a
// year's mail as slow as taking it in; a bounded batch keeps each transaction's locks short.
const SWEEP_BATCH = 100;

/** Deletes message `id` (see Store.deleteMessage). */
export async function deleteMessage(pool: pg.Pool, id: string): Promise<MessageMeta> {
  if (!storable(id)) throw storeErrors.messageNotFound(id);
  return inTransaction(pool, async (tx) => {
    const { rows } = await tx.query<{ meta: MessageMeta; queued: boolean }>(
      'SELECT meta, EXISTS (SELECT 1 FROM queue WHERE queue.id = messages.id) AS queued FROM messages WHERE id = $1 FOR UPDATE',
      [id],
    );
    const row = rows[0];
    if (!row) throw storeErrors.messageNotFound(id);
    if (row.queued) throw storeErrors.messageQueued(id);
    await deleteRows(tx, [id]);
    return row.meta;
  });
}

/** Deletes every message that arrived before `before`, but queued ones, oldest first (see Store.deleteMessagesBefore). */
export async function deleteMessagesBefore(pool: pg.Pool, before: Date, signal?: AbortSignal): Promise<DeletedMessages> {
  const done: DeletedMessages = { messages: 0, quarantined: 0, bytes: 0, queued: 0 };
  // Ids sort by arrival: the messages older than `before` are the ids below its floor.
  const below = idFloor(before);
  let after = '';
  for (;;) {
    if (signal?.aborted) return done;
    const page = await inTransaction(pool, async (tx) => {
      // SKIP LOCKED: a message another node is deleting or rewriting right now is left to the next sweep.
      const { rows } = await tx.query<{ id: string; size: string; queued: boolean }>(
        `SELECT id, size, EXISTS (SELECT 1 FROM queue WHERE queue.id = messages.id) AS queued FROM messages
         WHERE id < $1 AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED`,
        [below, after, SWEEP_BATCH],
      );
      // Never a message still to be sent: it stays until it leaves the queue, then goes at a later sweep.
      const gone = rows.filter((r) => !r.queued);
      const quarantined =
        gone.length > 0
          ? await deleteRows(
              tx,
              gone.map((r) => r.id),
            )
          : 0;
      done.messages += gone.length;
      done.quarantined += quarantined;
      done.bytes += gone.reduce((sum, r) => sum + Number(r.size), 0);
      done.queued += rows.length - gone.length;
      return rows;
    });
    if (page.length === 0) return done;
    after = page[page.length - 1]!.id;
  }
}

/** Deletes messages IDS with their chunks and quarantined attachments inside TX; how many quarantined attachments went. */
async function deleteRows(tx: pg.PoolClient, ids: readonly string[]): Promise<number> {
  await tx.query('DELETE FROM message_chunks WHERE message = ANY($1)', [ids]);
  const { rowCount } = await tx.query('DELETE FROM quarantine WHERE message = ANY($1)', [ids]);
  // Every spool of the message, recorded or not (`<id>.<n>`).
  await tx.query(
    `DELETE FROM quarantine_chunks q USING unnest($1::text[]) AS d(id)
     WHERE q.quarantine >= d.id || '.' AND q.quarantine < d.id || '/'`,
    [ids],
  );
  await tx.query('DELETE FROM messages WHERE id = ANY($1)', [ids]);
  return rowCount ?? 0;
}
