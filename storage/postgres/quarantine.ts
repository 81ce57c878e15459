/**
 * Quarantined attachments on PostgreSQL: the records in `quarantine` (written by the message's
 * commit, a `quarantine` side record: records.ts), the original part's bytes in
 * `quarantine_chunks`, written while the message streams by a {@link PgQuarantineSpool}.
 * A spool's first chunk carries a `spool` mark on its message, so a crash before the message's
 * commit leaves bytes the sweep finds (sweep.ts); the commit deletes the mark
 * (message-writer.ts, told through `spoolMarks`), an abort deletes the bytes.
 * Cisco guide: "Viewing / Deleting Blocked Attachments".
 */
import { Readable } from 'node:stream';
import type pg from 'pg';
import type { QuarantineRecord } from '../records.js';
import type { QuarantineSpool } from '../store.js';
import { storeErrors } from '../../lib/errors.js';
import { CHUNK_SIZE, CHUNKS_PER_READ, Chunker } from './chunks.js';
import { storable } from './message-row.js';
import { inTransaction, type Pools } from './pool.js';
import { track, type WriterContext } from './message-writer.js';

const INSERT_CHUNK = 'INSERT INTO quarantine_chunks (quarantine, seq, data) VALUES ($1, $2, $3)';
// The first chunk of a spool carries its message's mark (shared by the message's spools).
const INSERT_FIRST_CHUNK = `WITH mark AS (
  INSERT INTO unfinished (id, kind, generation, node) VALUES ($4, 'spool', 0, $5) ON CONFLICT DO NOTHING
) ${INSERT_CHUNK}`;

/** One part's bytes in 256 KiB rows; see the module comment. */
export class PgQuarantineSpool implements QuarantineSpool {
  readonly id: string;
  readonly #ctx: WriterContext;
  readonly #messageId: string;
  readonly #chunker: Chunker;
  #bytes = 0;

  /** `id` is `<message id>.<n>`. */
  constructor(ctx: WriterContext, id: string) {
    this.id = id;
    this.#ctx = ctx;
    this.#messageId = id.slice(0, id.lastIndexOf('.'));
    this.#chunker = new Chunker((seq, data) => this.#insert(seq, data));
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Appends bytes; resolves at once while a chunk fills, after the previous insert when one is full. */
  async write(data: Buffer): Promise<void> {
    this.#bytes += data.length;
    await this.#chunker.add(data);
  }

  /** Writes what is still staged. */
  async close(): Promise<void> {
    await this.#chunker.drain();
    const tail = this.#chunker.take();
    if (tail.length === 0) return;
    await this.#insert(this.#chunker.seq, tail);
    this.#chunker.advance();
  }

  #insert(seq: number, data: Buffer): Promise<void> {
    const { pools, node, spoolMarks, background } = this.#ctx;
    // Before the insert: a mark that may be stored must be one the message's commit removes.
    if (seq === 0) spoolMarks.add(this.#messageId);
    const query =
      seq === 0 ? pools.bytes.query(INSERT_FIRST_CHUNK, [this.id, seq, data, this.#messageId, node]) : pools.bytes.query(INSERT_CHUNK, [this.id, seq, data]);
    return track(
      background,
      query.then(() => {}),
    );
  }

  /** The written bytes from `offset` on, a few chunks at a time (after `close`). */
  async *replay(offset = 0): AsyncGenerator<Buffer> {
    // Every chunk but the last is CHUNK_SIZE: the first one wanted is known without reading the others.
    let seq = Math.floor(offset / CHUNK_SIZE);
    let skip = offset - seq * CHUNK_SIZE;
    for (;;) {
      const { rows } = await this.#ctx.pools.commits.query<{ data: Buffer }>(
        'SELECT data FROM quarantine_chunks WHERE quarantine = $1 AND seq >= $2 ORDER BY seq LIMIT $3',
        [this.id, seq, CHUNKS_PER_READ],
      );
      for (const { data } of rows) {
        if (skip < data.length) yield skip > 0 ? data.subarray(skip) : data;
        skip = 0;
      }
      if (rows.length < CHUNKS_PER_READ) return;
      seq += rows.length;
    }
  }

  /** Removes the written bytes (the part passed, or the action is delete). */
  async discard(): Promise<void> {
    await this.#chunker.settle();
    this.#chunker.clear();
    await track(this.#ctx.background, this.#ctx.pools.bytes.query('DELETE FROM quarantine_chunks WHERE quarantine = $1', [this.id]));
  }
}

/** Quarantined attachments, newest message first (ids sort by time); only one message's with `messageId`. */
export async function listQuarantine(db: pg.Pool, opts: { messageId?: string } = {}): Promise<QuarantineRecord[]> {
  if (opts.messageId !== undefined && !storable(opts.messageId)) return [];
  const { rows } =
    opts.messageId === undefined
      ? await db.query<{ record: QuarantineRecord }>('SELECT record FROM quarantine ORDER BY id DESC')
      : await db.query<{ record: QuarantineRecord }>('SELECT record FROM quarantine WHERE message = $1 ORDER BY id DESC', [opts.messageId]);
  return rows.map((r) => r.record);
}

/** One quarantined attachment, or undefined. */
export async function getQuarantined(db: pg.Pool, id: string): Promise<QuarantineRecord | undefined> {
  if (!storable(id)) return undefined;
  const { rows } = await db.query<{ record: QuarantineRecord }>('SELECT record FROM quarantine WHERE id = $1', [id]);
  return rows[0]?.record;
}

/** The original part's bytes (raw header block and encoded body, as received), a few chunks at a time. */
export function openQuarantined(pools: Pools, id: string): Readable {
  async function* bytes(): AsyncGenerator<Buffer> {
    if (!(await getQuarantined(pools.commits, id))) throw storeErrors.quarantineNotFound(id);
    for (let seq = 0; ;) {
      const { rows } = await pools.commits.query<{ data: Buffer }>(
        'SELECT data FROM quarantine_chunks WHERE quarantine = $1 AND seq >= $2 ORDER BY seq LIMIT $3',
        [id, seq, CHUNKS_PER_READ],
      );
      for (const { data } of rows) yield data;
      if (rows.length < CHUNKS_PER_READ) return;
      seq += rows.length;
    }
  }
  return Readable.from(bytes(), { objectMode: false });
}

/** Removes a quarantined attachment for good, record and bytes in one transaction; the placeholder text stays in the message. */
export async function deleteQuarantined(pools: Pools, id: string): Promise<QuarantineRecord> {
  if (!storable(id)) throw storeErrors.quarantineNotFound(id);
  return inTransaction(pools.commits, async (tx) => {
    const { rows } = await tx.query<{ record: QuarantineRecord }>('DELETE FROM quarantine WHERE id = $1 RETURNING record', [id]);
    const record = rows[0]?.record;
    if (!record) throw storeErrors.quarantineNotFound(id);
    await tx.query('DELETE FROM quarantine_chunks WHERE quarantine = $1', [id]);
    return record;
  });
}
