/**
 * Writes new bytes for a committed message (e.g. an attachment restored from quarantine) as
 * a new generation of its chunks, and swaps them in with one synced batch; see layout.ts for
 * the keys and for what a crash at any point leaves (a `rewrites` mark the next open sweeps).
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { MessageMeta } from '../records.js';
import type { MessageRewrite } from '../store.js';
import type { LevelStore } from './store.js';
import { chunkKey, clearRewriteGarbage, type StoreOp } from './layout.js';
import { CHUNK_SIZE } from './message-writer.js';

// Rewrites of one message must not overlap: each reads the current bytes and replaces them;
// nor may a deletion, or a rewrite's commit would bring the deleted message back.
const locks = new WeakMap<LevelStore, Map<string, Promise<void>>>();

/**
 * Waits until no other rewrite (or deletion, retention.ts) of message `id` holds it, then holds
 * it until the returned function is called.
 */
export async function lockMessage(store: LevelStore, id: string): Promise<() => void> {
  let perStore = locks.get(store);
  if (!perStore) locks.set(store, (perStore = new Map()));
  const previous = perStore.get(id) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => (release = resolve));
  const queued = previous.then(() => mine);
  perStore.set(id, queued);
  await previous;
  return () => {
    release();
    if (perStore.get(id) === queued) perStore.delete(id);
  };
}

/** A Writable of the message's new bytes; `commit` swaps them in, `abandon` removes them. */
export class RewriteWriter extends Writable implements MessageRewrite {
  #stage: Buffer[] = [];
  #staged = 0;
  #seq = 0;
  #bytes = 0;
  #release: () => void;

  readonly #store: LevelStore;
  readonly #id: string;
  readonly #oldGeneration: number;
  readonly #generation: number;

  private constructor(store: LevelStore, id: string, oldGeneration: number, generation: number, release: () => void) {
    super();
    this.#store = store;
    this.#id = id;
    this.#oldGeneration = oldGeneration;
    this.#generation = generation;
    this.#release = release;
  }

  /** Waits for any other rewrite of the message, then marks a new generation as in progress. */
  static async start(store: LevelStore, id: string): Promise<RewriteWriter> {
    const done = await lockMessage(store, id);
    try {
      const { generations, rewrites } = store.sublevels;
      const old = (await generations.get(id)) ?? 0;
      await rewrites.put(id, { generation: old + 1 });
      return new RewriteWriter(store, id, old, old + 1, done);
    } catch (err) {
      done();
      throw err;
    }
  }

  get bytesWritten(): number {
    return this.#bytes;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#bytes += chunk.length;
    this.#stage.push(Buffer.from(chunk));
    this.#staged += chunk.length;
    this.#flushFull().then(() => callback(), callback);
  }

  async #flushFull(): Promise<void> {
    while (this.#staged >= CHUNK_SIZE) {
      const all = Buffer.concat(this.#stage, this.#staged);
      await this.#put(all.subarray(0, CHUNK_SIZE));
      const rest = all.subarray(CHUNK_SIZE);
      this.#stage = rest.length ? [rest] : [];
      this.#staged = rest.length;
    }
  }

  #put(value: Buffer): Promise<void> {
    return this.#store.sublevels.chunks.put(chunkKey(this.#id, this.#seq++, this.#generation), value);
  }

  /**
   * Makes the new bytes the message's, with `meta` (size set to the bytes written) and the
   * removal of the restored quarantine record when given, in one synced batch; then removes
   * the old generation and the restored part's bytes.
   */
  async commit(meta: MessageMeta, opts: { restoredQuarantineId?: string } = {}): Promise<void> {
    const restoredQuarantineId = opts.restoredQuarantineId;
    try {
      await finished(this);
      if (this.#staged > 0) await this.#put(Buffer.concat(this.#stage, this.#staged));
      const { generations, messages, rewrites, chunks, quarantine, quarantineChunks } = this.#store.sublevels;
      const garbage = { generation: this.#oldGeneration, ...(restoredQuarantineId ? { quarantineId: restoredQuarantineId } : {}) };
      const ops: StoreOp[] = [
        { type: 'put', sublevel: generations, key: this.#id, value: this.#generation },
        { type: 'put', sublevel: messages, key: this.#id, value: { ...meta, size: this.#bytes } },
        { type: 'put', sublevel: rewrites, key: this.#id, value: garbage },
      ];
      if (restoredQuarantineId) ops.push({ type: 'del', sublevel: quarantine, key: restoredQuarantineId });
      await this.#store.commitBatch(ops);
      await clearRewriteGarbage(chunks, quarantineChunks, this.#id, garbage);
      await rewrites.del(this.#id);
    } finally {
      this.#release();
    }
  }

  /** Removes the new generation's chunks; the message keeps its old bytes. */
  async abandon(): Promise<void> {
    try {
      if (!this.destroyed) this.destroy();
      const { rewrites, chunks, quarantineChunks } = this.#store.sublevels;
      await clearRewriteGarbage(chunks, quarantineChunks, this.#id, { generation: this.#generation });
      await rewrites.del(this.#id);
    } finally {
      this.#release();
    }
  }
}
