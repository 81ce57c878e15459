/**
 * The spool: the message as received, kept while its pipeline runs so that a wrapping message
 * can still be built from the original when the pipeline fails (wrap-unparsable.ts).
 *
 * Data masking promises that unmasked text never reaches storage, so spooled chunks are
 * encrypted with AES-256-CTR under a random key that lives only in this process's memory:
 * after a crash the spool cannot be read by anyone, and the store's sweep removes it. Chunks
 * are 64 KiB (storage/layout.ts `!spool!<id>!<seq>`), written unsynced and one at a time, so a
 * slow disk slows the sender instead of filling memory. The last partial chunk stays in memory
 * only, so a message under 64 KiB (most mail) costs the spool no write at all.
 *
 * The spool has its own id, registered in the `pending` sublevel with its first chunk: the
 * message writer's `abort()` clears the spool of the message's own id, and the wrapper is built
 * after that abort. The sweep at open clears a spool left by a crash like any unfinished message.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import type { Store } from '../storage/store.js';
import { CHUNK_SIZE, newMessageId } from '../storage/store.js';
import { chunkKey, chunkRange } from '../storage/layout.js';

/** Where the received bytes go while the pipeline runs, and how to read them back. */
export interface Spool {
  /** Takes the next bytes; resolves once they are safe to release (written, or held in the last chunk). */
  write(chunk: Buffer): Promise<void>;
  /** The original bytes from the first, as received. Only after every write has resolved. */
  open(): Readable;
  /** Removes the spooled bytes. Safe to call twice. */
  discard(): Promise<void>;
}

/** A spool in the store, encrypted under a key held in memory only. */
export function storeSpool(store: Store): Spool {
  const id = newMessageId();
  const { spool, pending } = store.sublevels;
  const key = randomBytes(32);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  let stage = Buffer.allocUnsafe(CHUNK_SIZE);
  let staged = 0;
  let seq = 0;
  let discarded = false;

  return {
    async write(chunk) {
      if (discarded) throw new Error(`spool ${id}: write after discard`);
      let offset = 0;
      while (offset < chunk.length) {
        const copied = chunk.copy(stage, staged, offset);
        offset += copied;
        staged += copied;
        if (staged < CHUNK_SIZE) continue;
        // The pending mark goes first: LevelDB recovers a prefix of its log, so a chunk that
        // survives a crash always has its mark, and the sweep finds it.
        if (seq === 0) await pending.put(id, '');
        await spool.put(chunkKey(id, seq++), cipher.update(stage));
        staged = 0;
      }
    },
    open() {
      const decipher = createDecipheriv('aes-256-ctr', key, iv);
      const tail = Buffer.from(stage.subarray(0, staged));
      const chunks = seq;
      async function* bytes(): AsyncGenerator<Buffer> {
        if (chunks > 0) {
          // for-await closes the iterator when the reader stops early (the header read does).
          for await (const sealed of spool.values(chunkRange(id))) yield decipher.update(sealed);
        }
        if (tail.length) yield tail;
      }
      return Readable.from(bytes(), { objectMode: false });
    },
    async discard() {
      if (discarded) return;
      discarded = true;
      stage = Buffer.alloc(0);
      staged = 0;
      if (seq > 0) {
        await spool.clear(chunkRange(id));
        await pending.del(id);
      }
    },
  };
}

/**
 * A spool that writes nothing and reads the original again from where it came from, for a
 * dry run (`mailgate policy test FILE` reopens the file).
 */
export function reopenableSpool(reopen: () => Readable): Spool {
  return {
    async write() {},
    open: reopen,
    async discard() {},
  };
}

/**
 * Copies every byte it is given into a spool and on to `branch`, the stream the pipeline reads.
 * When the pipeline fails and destroys `branch`, the tee goes on spooling to the end of the
 * input, so the wrapper gets the whole original. Waits for both the spool and the branch,
 * so backpressure from either reaches the sender. Destroying the tee with an error (the size
 * limit, the client gone) destroys the branch with it, which fails the pipeline.
 */
export class SpoolTee extends Writable {
  /** The bytes for the pipeline. */
  readonly branch = new PassThrough();
  readonly #spool: Spool;

  constructor(spool: Spool) {
    super();
    this.#spool = spool;
    // The pipeline reports the branch's errors; after it has settled nobody else listens.
    this.branch.on('error', () => {});
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    Promise.all([this.#spool.write(chunk), this.#forward(chunk)]).then(() => done(), (err: unknown) => done(err instanceof Error ? err : new Error(String(err))));
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.branch.destroyed) this.branch.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (err && !this.branch.destroyed) this.branch.destroy(err);
    done(err);
  }

  #forward(chunk: Buffer): Promise<void> {
    const branch = this.branch;
    if (branch.destroyed || branch.writableEnded) return Promise.resolve();
    if (branch.write(chunk)) return Promise.resolve();
    return new Promise((resolve) => {
      const go = () => {
        branch.off('drain', go);
        branch.off('close', go);
        resolve();
      };
      branch.on('drain', go);
      branch.on('close', go);
    });
  }
}
