/**
 * New bytes for a committed message (an attachment restored from quarantine) on PostgreSQL:
 * a new generation of its chunks, written under a `rewrite` mark, swapped in by one
 * transaction that moves the message's row to the new generation (only if it is still at the
 * old one), deletes the old generation's chunks and the restored quarantine record and bytes,
 * and removes the mark. Readers see the old bytes or the new, never a mix; a reader in the
 * middle of the old bytes when the swap commits finds them gone and fails with MESSAGE_DAMAGED
 * (rare: a restore while the same message is being read; reading it again gives the new bytes).
 *
 * Rewrites of one message take turns within a process (a lock per message); between nodes,
 * the generation check makes the later commit fail instead of overwriting the earlier.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { MessageMeta } from '../records.js';
import type { MessageRewrite } from '../store.js';
import { storeErrors } from '../../lib/errors.js';
import { Chunker } from './chunks.js';
import { MESSAGE_COLUMNS, messageRow, storable } from './message-row.js';
import { deleteMarks, track, type WriterContext } from './message-writer.js';
import { inTransaction } from './pool.js';

const INSERT_CHUNK = 'INSERT INTO message_chunks (message, generation, seq, data) VALUES ($1, $2, $3, $4)';
const INSERT_FIRST_CHUNK = `WITH mark AS (
  INSERT INTO unfinished (id, kind, generation, node) VALUES ($1, 'rewrite', $2, $5) ON CONFLICT DO NOTHING
) ${INSERT_CHUNK}`;
// The row's columns from the new metadata, and the new generation, only if no one swapped first.
const SWAP = `UPDATE messages SET ${MESSAGE_COLUMNS.slice(1)
  .map((c, i) => `${c} = $${i + 2}`)
  .join(', ')}, generation = $${MESSAGE_COLUMNS.length + 1}
  WHERE id = $1 AND generation = $${MESSAGE_COLUMNS.length + 2}`;

/** Per-message turns for rewrites within one store. */
export class MessageLocks {
  readonly #held = new Map<string, Promise<void>>();

  /** Waits until no other holder has message ID, then holds it until the returned function is called. */
  async lock(id: string): Promise<() => void> {
    const previous = this.#held.get(id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const queued = previous.then(() => mine);
    this.#held.set(id, queued);
    await previous;
    return () => {
      release();
      if (this.#held.get(id) === queued) this.#held.delete(id);
    };
  }
}

/** A Writable of the message's new bytes; `commit` swaps them in, `abandon` removes them. */
export class PgRewrite extends Writable implements MessageRewrite {
  readonly #ctx: WriterContext;
  readonly #id: string;
  readonly #oldGeneration: number;
  readonly #generation: number;
  readonly #release: () => void;
  readonly #chunker: Chunker;
  #bytes = 0;
  #done = false;

  private constructor(ctx: WriterContext, id: string, oldGeneration: number, generation: number, release: () => void) {
    super();
    this.#ctx = ctx;
    this.#id = id;
    this.#oldGeneration = oldGeneration;
    this.#generation = generation;
    this.#release = release;
    this.#chunker = new Chunker((seq, data) => this.#insert(seq, data));
  }

  /** Waits for any other rewrite of the message in this store, then starts the next generation. */
  static async start(ctx: WriterContext, locks: MessageLocks, id: string): Promise<PgRewrite> {
    const release = await locks.lock(id);
    try {
      if (!storable(id)) throw storeErrors.messageNotFound(id);
      // The next generation is past any a crashed rewrite left unswept, so its rows never collide with them.
      const { rows } = await ctx.pools.commits.query<{ generation: number; highest: number }>(
        'SELECT generation, (SELECT coalesce(max(generation), 0) FROM message_chunks WHERE message = $1) AS highest FROM messages WHERE id = $1',
        [id],
      );
      if (rows.length === 0) throw storeErrors.messageNotFound(id);
      return new PgRewrite(ctx, id, rows[0]!.generation, Math.max(rows[0]!.generation, rows[0]!.highest) + 1, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  get bytesWritten(): number {
    return this.#bytes;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#bytes += chunk.length;
    this.#chunker.add(chunk).then(
      () => callback(),
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
    );
  }

  #insert(seq: number, data: Buffer): Promise<void> {
    const { pools, node, background } = this.#ctx;
    const query =
      seq === 0
        ? pools.bytes.query(INSERT_FIRST_CHUNK, [this.#id, this.#generation, seq, data, node])
        : pools.bytes.query(INSERT_CHUNK, [this.#id, this.#generation, seq, data]);
    return track(
      background,
      query.then(() => {}),
    );
  }

  /** Swaps the new bytes in with META (size set to the bytes written), removing the restored quarantined part when given. */
  async commit(meta: MessageMeta, opts: { restoredQuarantineId?: string } = {}): Promise<void> {
    try {
      await track(this.#ctx.commits, this.#commit(meta, opts.restoredQuarantineId));
    } finally {
      this.#finish();
    }
  }

  async #commit(meta: MessageMeta, restored: string | undefined): Promise<void> {
    await finished(this);
    await this.#chunker.drain();
    const marked = this.#chunker.seq > 0;
    const tail = this.#chunker.take();
    const row = messageRow({ ...meta, id: this.#id, size: this.#bytes });
    await inTransaction(this.#ctx.pools.commits, async (tx) => {
      const swapped = await tx.query(SWAP, [...row, this.#generation, this.#oldGeneration]);
      // Deleted meanwhile, or another node's rewrite swapped first.
      if (swapped.rowCount === 0) throw storeErrors.messageNotFound(this.#id);
      if (tail.length > 0) await tx.query(INSERT_CHUNK, [this.#id, this.#generation, this.#chunker.seq, tail]);
      if (marked) await deleteMarks(tx, this.#id, this.#ctx.node, ['rewrite'], this.#generation);
      await tx.query('DELETE FROM message_chunks WHERE message = $1 AND generation = $2', [this.#id, this.#oldGeneration]);
      if (restored !== undefined && storable(restored)) {
        await tx.query('DELETE FROM quarantine WHERE id = $1', [restored]);
        await tx.query('DELETE FROM quarantine_chunks WHERE quarantine = $1', [restored]);
      }
    });
  }

  /** Removes the new generation's chunks and its mark; the message keeps its old bytes. */
  async abandon(): Promise<void> {
    try {
      if (!this.destroyed) this.destroy();
      await this.#chunker.settle();
      this.#chunker.clear();
      await this.#ctx.pools.bytes.query(
        `WITH chunks AS (DELETE FROM message_chunks WHERE message = $1 AND generation = $2
                           AND NOT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND generation = $2))
         DELETE FROM unfinished WHERE id = $1 AND kind = 'rewrite' AND generation = $2`,
        [this.#id, this.#generation],
      );
    } finally {
      this.#finish();
    }
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#release();
  }
}
