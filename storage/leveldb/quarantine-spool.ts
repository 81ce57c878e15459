/**
 * The bytes of one MIME part written into the `quarantineChunks` sublevel while the message
 * streams (keys `<message id>.<n>!<8-digit seq>`, see layout.ts). Used for parts that are
 * blocked (kept as the quarantined original) and for parts whose verdict is known only at
 * their end (archives, attached messages): those wait here, not in memory, and are played
 * back into the message if they pass. Unsynced writes: the message's synced commit makes the
 * quarantine record visible, and `clearUnfinished` removes these keys if the message aborts.
 * The message's pending mark is put before the first of them, so that the sweep at open finds
 * them after a crash even when the message itself never wrote a chunk; the message's commit
 * removes the mark (message-writer.ts, told through `spoolMarks`).
 */
import type { QuarantineSpool as StoreQuarantineSpool } from '../store.js';
import type { Sublevels } from './layout.js';

const SPOOL_CHUNK = 64 * 1024;
const SEQ_WIDTH = 8;

/** Key of chunk `seq` of quarantined part `qid`. */
export function quarantineChunkKey(qid: string, seq: number): string {
  return `${qid}!${String(seq).padStart(SEQ_WIDTH, '0')}`;
}

/** Range of the chunk keys of quarantined part `qid`. */
export function quarantineChunkRange(qid: string): { gte: string; lt: string } {
  return { gte: `${qid}!`, lt: `${qid}"` };
}

/** Writes one part's bytes in 64 KiB chunks; see the module comment. */
export class QuarantineSpool implements StoreQuarantineSpool {
  readonly #sublevels: Sublevels;
  readonly #qid: string;
  readonly #spoolMarks: Set<string>;
  #bytes = 0;
  #stage: Buffer[] = [];
  #staged = 0;
  #seq = 0;
  #marked = false;

  /** `qid` is `<message id>.<n>`; `spoolMarks` collects the ids of messages whose pending mark a spool put. */
  constructor(sublevels: Sublevels, qid: string, spoolMarks: Set<string>) {
    this.#sublevels = sublevels;
    this.#qid = qid;
    this.#spoolMarks = spoolMarks;
  }

  get id(): string {
    return this.#qid;
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Appends bytes; resolves once any full chunk is written (backpressure for the caller). */
  async write(data: Buffer): Promise<void> {
    this.#bytes += data.length;
    this.#stage.push(Buffer.from(data)); // the caller's buffer may be reused
    this.#staged += data.length;
    while (this.#staged >= SPOOL_CHUNK) {
      const all = Buffer.concat(this.#stage, this.#staged);
      await this.#markPending();
      await this.#sublevels.quarantineChunks.put(quarantineChunkKey(this.#qid, this.#seq++), all.subarray(0, SPOOL_CHUNK));
      const rest = all.subarray(SPOOL_CHUNK);
      this.#stage = rest.length ? [rest] : [];
      this.#staged = rest.length;
    }
  }

  /** Writes what is staged. */
  async close(): Promise<void> {
    if (this.#staged === 0) return;
    const all = Buffer.concat(this.#stage, this.#staged);
    this.#stage = [];
    this.#staged = 0;
    await this.#markPending();
    await this.#sublevels.quarantineChunks.put(quarantineChunkKey(this.#qid, this.#seq++), all);
  }

  async #markPending(): Promise<void> {
    if (this.#marked) return;
    this.#marked = true;
    const messageId = this.#qid.slice(0, this.#qid.lastIndexOf('.'));
    // Before the put: a mark that may be stored must be one the commit removes.
    this.#spoolMarks.add(messageId);
    await this.#sublevels.pending.put(messageId, '');
  }

  /** The written bytes from `offset` on, chunk by chunk (call after `close`). */
  async *replay(offset = 0): AsyncGenerator<Buffer> {
    let skip = offset;
    for await (const chunk of this.#sublevels.quarantineChunks.values(quarantineChunkRange(this.#qid))) {
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      yield skip > 0 ? chunk.subarray(skip) : chunk;
      skip = 0;
    }
  }

  /** Removes the written bytes (the part passed, or the action is delete). */
  async discard(): Promise<void> {
    this.#stage = [];
    this.#staged = 0;
    await this.#sublevels.quarantineChunks.clear(quarantineChunkRange(this.#qid));
  }
}
