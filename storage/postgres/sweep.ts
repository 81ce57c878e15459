/**
 * What a crash leaves unfinished, removed when a store opens: the `unfinished` marks of this
 * node (it crashed, and is starting again), unless a running `serve` holds the node's name
 * (node-name.ts: they are its writes in progress, and this is a CLI command with the same
 * name), and those of any node older than a day (a node that never came back). Each mark is deleted in the transaction that removes its bytes; the
 * mark's row lock orders the sweep with a commit that deletes the same mark, so the one that
 * comes second finds it gone (the commit then fails: message-writer.ts).
 */
import type pg from 'pg';
import type { StoreLogger } from '../store.js';
import { removeUnfinished } from './message-writer.js';
import { inTransaction } from './pool.js';
import { nodeNameHeld } from './node-name.js';

// A mark older than this is a crash's, whatever node left it: no message streams in for a day.
const STALE_AFTER = '1 day';

/** Sweeps the marks NODE left and the stale ones; how many it swept. */
export async function sweepUnfinished(pool: pg.Pool, node: string, logger: StoreLogger): Promise<number> {
  const { rows } = await pool.query<{ id: string; kind: string; generation: number; node: string }>(
    // One statement: its snapshot is taken before pg_locks is read, so a serve that takes the
    // name after the check has no mark in what this reads.
    `SELECT id, kind, generation, node FROM unfinished
     WHERE (node = $1 AND NOT ${nodeNameHeld('$1')}) OR started_at < now() - interval '${STALE_AFTER}'`,
    [node],
  );
  let swept = 0;
  for (const mark of rows) {
    const removed = await inTransaction(pool, async (tx) => {
      const { rowCount } = await tx.query('DELETE FROM unfinished WHERE id = $1 AND kind = $2 AND generation = $3', [mark.id, mark.kind, mark.generation]);
      if (!rowCount) return false; // committed or swept meanwhile
      if (mark.kind === 'rewrite') {
        // The new generation's chunks, unless it was swapped in (then they are the message's bytes).
        await tx.query(
          'DELETE FROM message_chunks WHERE message = $1 AND generation = $2 AND NOT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND generation = $2)',
          [mark.id, mark.generation],
        );
      } else if ((await tx.query('SELECT 1 FROM messages WHERE id = $1', [mark.id])).rowCount) {
        logger.warn({ id: mark.id, kind: mark.kind }, 'unfinished mark on a committed message; keeping the message');
      } else {
        await removeUnfinished(tx, mark.id);
      }
      return true;
    });
    if (removed) swept++;
  }
  return swept;
}
