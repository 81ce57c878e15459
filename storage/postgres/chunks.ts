/**
 * Bytes cut into the 256 KiB rows of `message_chunks` and `quarantine_chunks` while they
 * stream in: every row but the last is exactly CHUNK_SIZE (so a replay from an offset knows
 * its first row without reading the others), and at most one row waits on its insert while
 * the next fills, so memory per message stays about two chunks whatever its size.
 */
import { grownStage } from '../../lib/buffers.js';

/** Bytes per chunk row: big enough that a row costs little beside its bytes, small enough to hold two per message in memory. */
export const CHUNK_SIZE = 256 * 1024;
/** Chunk rows read at once by a reader: a few, never the whole message. */
export const CHUNKS_PER_READ = 4;

const EMPTY = Buffer.alloc(0);

/** Stages bytes into chunks and hands each full one to `insert`, one insert at a time. */
export class Chunker {
  readonly #insert: (seq: number, data: Buffer) => Promise<void>;
  #stage: Buffer = EMPTY;
  #staged = 0;
  #seq = 0;
  #inflight: Promise<void> | undefined;

  /** INSERT stores chunk SEQ (from 0); it is called with one chunk at a time, in order. */
  constructor(insert: (seq: number, data: Buffer) => Promise<void>) {
    this.#insert = insert;
  }

  /** Chunks handed to `insert` so far: the seq of the next one. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * Copies BYTES in (the caller may reuse its buffer). Resolves once the caller may send more:
   * at once while the chunk fills, after the previous insert when a full chunk must go. A full
   * chunk goes only when more bytes follow it, so bytes that end within one chunk are never
   * inserted here (the commit writes them: `take()`). Rejects with a failed insert's error.
   */
  async add(bytes: Buffer): Promise<void> {
    for (let offset = 0; offset < bytes.length;) {
      if (this.#staged === CHUNK_SIZE) await this.#send();
      const end = Math.min(bytes.length, offset + CHUNK_SIZE - this.#staged);
      // Grown by doubling up to one chunk: a small message costs about its size.
      this.#stage = grownStage(this.#stage, this.#staged, this.#seq > 0 ? CHUNK_SIZE : this.#staged + end - offset, CHUNK_SIZE);
      bytes.copy(this.#stage, this.#staged, offset, end);
      this.#staged += end - offset;
      offset = end;
    }
  }

  /** Waits for the insert in flight; rejects with its error. */
  async drain(): Promise<void> {
    const inflight = this.#inflight;
    this.#inflight = undefined;
    await inflight;
  }

  /** Waits for the insert in flight, ignoring its outcome (an abort cleans up either way). */
  async settle(): Promise<void> {
    await this.#inflight?.catch(() => {});
  }

  /** The staged bytes (at most one chunk), taken out: the stage is empty after. The caller stores them as chunk `seq`. */
  take(): Buffer {
    const tail = this.#stage.subarray(0, this.#staged);
    this.#stage = EMPTY;
    this.#staged = 0;
    return tail;
  }

  /** Counts the taken tail as stored (after the caller inserted it as chunk `seq`). */
  advance(): void {
    this.#seq++;
  }

  /** Drops the staged bytes. */
  clear(): void {
    this.#stage = EMPTY;
    this.#staged = 0;
  }

  async #send(): Promise<void> {
    await this.drain();
    const data = this.take();
    const inflight = this.#insert(this.#seq++, data);
    // Observed at the next add, drain or settle; never an unhandled rejection meanwhile.
    inflight.catch(() => {});
    this.#inflight = inflight;
  }
}
