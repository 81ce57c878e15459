/**
 * The writable end of the store for one message. Bytes go to LevelDB in 64 KiB chunks as
 * they arrive, unsynced; only `commit()` is synced. `_write` calls back after its batch is
 * written, so a slow disk slows the sender instead of filling memory. The first two chunks
 * wait in memory together, so a message under 128 KiB (most mail, and the 100 KB the ingest
 * bench sends) reaches LevelDB only in the commit's one synced batch: no unsynced batch, no
 * pending mark to put and delete again.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { MessageMeta } from '../records.js';
import type { MessageWriter as StoreMessageWriter, SideRecord } from '../store.js';
import type { GroupCommit } from './group-commit.js';
import { aliasKey, chunkKey, clearUnfinished, messageIdKey, quarantineRange, type RootDb, type StoreOp, type Sublevels } from './layout.js';
import { sideRecordOps } from './side-records.js';
import { grownStage } from '../../lib/buffers.js';
import { WriterLifecycle } from '../writer-lifecycle.js';

/** Size of a stored chunk: small values keep LevelDB's memory use low (RECIPES.md). */
export const CHUNK_SIZE = 64 * 1024;
// Bounds one unsynced batch (and the copies it holds) when a caller writes a huge buffer at once.
const CHUNKS_PER_BATCH = 16;
// Chunks held in memory before the first batch: memory per message stays bounded by it.
const FIRST_CHUNKS = 2;
// Smallest staging buffer: below Node's 4 KiB pool threshold, so tiny messages share a slab.
const EMPTY: Buffer = Buffer.alloc(0);

/** What a writer needs from its store. */
export interface WriterContext {
  db: RootDb;
  sublevels: Sublevels;
  groupCommit: GroupCommit<StoreOp>;
  /**
   * Ids of messages whose pending mark a quarantine spool put (quarantine-spool.ts): their
   * commit removes it, though the message itself may never have filled a chunk.
   */
  spoolMarks: Set<string>;
  /** Commits begun and not yet settled: the store's close waits for them. */
  commits: Set<Promise<void>>;
}

/** The store's MessageWriter (storage/store.ts) on LevelDB. */
export class MessageWriter extends Writable implements StoreMessageWriter {
  /** The id the message is stored under. */
  readonly id: string;
  readonly #ctx: WriterContext;
  readonly #life: WriterLifecycle;
  #bytesWritten = 0;
  // The chunk being filled: grown as bytes arrive, a whole chunk at once after the first.
  #stage: Buffer = EMPTY;
  #staged = 0;
  #seq = 0;
  // Set when the batch carrying the pending mark is sent: from then on the mark and chunks may be stored.
  #pendingWritten = false;
  #inflight: Promise<void> = Promise.resolve();

  /** Use `store.createMessageWriter(id)`. */
  constructor(ctx: WriterContext, id: string) {
    super();
    this.#ctx = ctx;
    this.id = id;
    this.#life = new WriterLifecycle(id);
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
    // Bytes that do not fill the stage only wait in memory: no write, so nothing to wait for.
    if (this.#staged + chunk.length < this.#capacity) {
      this.#stageBytes(chunk, 0, chunk.length);
      callback();
      return;
    }
    const written = this.#append(chunk);
    this.#inflight = written.then(noop, noop);
    written.then(
      () => callback(),
      (err: unknown) => callback(asError(err)),
    );
  }

  /** How many bytes the stage holds before they are stored: the first chunks together, then one at a time. */
  get #capacity(): number {
    return this.#seq === 0 ? FIRST_CHUNKS * CHUNK_SIZE : CHUNK_SIZE;
  }

  // Copies into our own buffers: the caller may reuse its buffer once we call back.
  #stageBytes(chunk: Buffer, start: number, end: number): void {
    const need = this.#staged + end - start;
    // Once a chunk is stored the message is a big one: take whole chunks from then on.
    this.#stage = grownStage(this.#stage, this.#staged, this.#seq > 0 ? CHUNK_SIZE : need, this.#capacity);
    chunk.copy(this.#stage, this.#staged, start, end);
    this.#staged = need;
  }

  async #append(chunk: Buffer): Promise<void> {
    const { db, sublevels } = this.#ctx;
    let offset = 0;
    while (offset < chunk.length) {
      const ops: StoreOp[] = [];
      let chunks = 0;
      while (offset < chunk.length && chunks < CHUNKS_PER_BATCH) {
        const capacity = this.#capacity;
        const end = Math.min(chunk.length, offset + capacity - this.#staged);
        this.#stageBytes(chunk, offset, end);
        offset = end;
        if (this.#staged < capacity) break;
        // The pending mark goes with the first chunk, never after it (layout.ts): the open-time
        // sweep then finds every chunk a crash leaves behind.
        if (!this.#pendingWritten) {
          ops.push({ type: 'put', sublevel: sublevels.pending, key: this.id, value: '' });
          this.#pendingWritten = true;
        }
        chunks += this.#stagedChunkOps(ops);
      }
      if (ops.length > 0) await db.batch<string, unknown>(ops, {});
    }
  }

  /** Puts of the staged bytes as 64 KiB chunks (the last may be shorter) into `ops`, emptying the stage; how many. */
  #stagedChunkOps(ops: StoreOp[]): number {
    const { sublevels } = this.#ctx;
    let count = 0;
    for (let at = 0; at < this.#staged; at += CHUNK_SIZE, count++) {
      const value = this.#stage.subarray(at, Math.min(this.#staged, at + CHUNK_SIZE));
      ops.push({ type: 'put', sublevel: sublevels.chunks, key: chunkKey(this.id, this.#seq++), value });
    }
    this.#stage = EMPTY;
    this.#staged = 0;
    return count;
  }

  /**
   * Makes the message durable and visible: the last chunk, the metadata (with `size` set to
   * the bytes actually stored), the by-alias entry, the side records and the removal of the
   * pending mark go in one synced batch, shared with concurrent commits. Call after the
   * stream has ended. Rejects with the cause on failure; then call `abort()`.
   */
  commit(meta: MessageMeta, sideRecords: readonly SideRecord[] = []): Promise<void> {
    const alias = meta.source.alias;
    if (alias?.includes('\x00')) return Promise.reject(new TypeError(`message ${this.id}: alias contains NUL`));
    return this.#life.commit(meta, this.writableEnded, this.#ctx.commits, () => this.#commit(meta, alias, sideRecords));
  }

  async #commit(meta: MessageMeta, alias: string | undefined, sideRecords: readonly SideRecord[]): Promise<void> {
    await finished(this);
    const { sublevels, groupCommit, spoolMarks } = this.#ctx;
    const ops: StoreOp[] = [];
    this.#stagedChunkOps(ops);
    const stored: MessageMeta = { ...meta, size: this.#bytesWritten };
    ops.push({ type: 'put', sublevel: sublevels.messages, key: this.id, value: stored });
    if (alias !== undefined) ops.push({ type: 'put', sublevel: sublevels.byAlias, key: aliasKey(alias, this.id), value: '' });
    const byMessageId = messageIdKey(meta.messageId, this.id);
    if (byMessageId) ops.push({ type: 'put', sublevel: sublevels.byMessageId, key: byMessageId, value: '' });
    if (meta.conversation) ops.push({ type: 'put', sublevel: sublevels.byConversation, key: aliasKey(meta.conversation, this.id), value: '' });
    if (this.#pendingWritten || spoolMarks.has(this.id)) ops.push({ type: 'del', sublevel: sublevels.pending, key: this.id });
    // Records that belong to the message (e.g. its quarantined parts, its queue entry) become visible with it.
    if (sideRecords.length > 0) ops.push(...(await sideRecordOps(sublevels, sideRecords)));
    await groupCommit.commit(ops);
    spoolMarks.delete(this.id);
  }

  /**
   * Removes whatever chunks were written and the pending mark, and any parts the message
   * quarantined, e.g. when the message is refused or the pipeline fails. Stops the stream if
   * it is still open. Writes nothing when there is nothing to remove (a message that never
   * filled a chunk). Safe to call twice; refuses once `commit()` has begun.
   */
  abort(): Promise<void> {
    return this.#life.abort(async () => {
      await this.#removeWritten();
      this.#ctx.spoolMarks.delete(this.id);
    });
  }

  async #removeWritten(): Promise<void> {
    if (!this.destroyed) this.destroy();
    await this.#inflight;
    this.#stage = EMPTY;
    this.#staged = 0;
    const { sublevels } = this.#ctx;
    // A commit reported failed may still have been recovered by a reopen (write-guard.ts):
    // a message with its metadata is whole, and its chunks must stay.
    if (this.#life.commitTried && (await sublevels.messages.has(this.id))) return;
    if (this.#pendingWritten) {
      // Chunks first: if we crash in between, the pending mark makes the next open finish the job.
      await clearUnfinished(sublevels, this.id);
      await sublevels.pending.del(this.id);
      return;
    }
    // Nothing of ours is stored: no chunk batch was sent, and a failed commit's batch is atomic
    // and absent. Parts the message quarantined are written apart, under the message's pending
    // mark (quarantine-spool.ts); look before clearing, so that a refused small message costs no write.
    if (await hasQuarantined(sublevels, this.id)) {
      await clearUnfinished(sublevels, this.id);
      await sublevels.pending.del(this.id);
    }
  }
}

/** Whether quarantine records or bytes of message `id` exist (the ranges clearUnfinished clears). */
async function hasQuarantined(sublevels: Sublevels, id: string): Promise<boolean> {
  const range = { ...quarantineRange(id), limit: 1 };
  return (await sublevels.quarantineChunks.keys(range).all()).length > 0 || (await sublevels.quarantine.keys(range).all()).length > 0;
}

function noop(): void {}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
