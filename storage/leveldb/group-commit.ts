/**
 * Group commit: many callers share one synced write. While one synced batch is in flight,
 * further commits wait in a queue; when it completes, everything queued goes out as the
 * next batch. A caller's promise settles when the batch holding its operations is durable,
 * or rejects with that batch's error (a batch is atomic, so all of it failed).
 */

/** Options for {@link GroupCommit}. */
export interface GroupCommitOptions {
  /** Most callers whose operations go into one batch, to bound a batch's size. Default 256. */
  maxGroup?: number;
}

interface Waiting<Op> {
  ops: readonly Op[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Shares durable (synced) batch writes between concurrent callers. */
export class GroupCommit<Op> {
  readonly #write: (ops: Op[]) => Promise<void>;
  readonly #maxGroup: number;
  #queue: Waiting<Op>[] = [];
  #flushing: Promise<void> | undefined;
  #batches = 0;
  #commits = 0;

  /** @param write writes the operations as one synced, atomic batch. */
  constructor(write: (ops: Op[]) => Promise<void>, options: GroupCommitOptions = {}) {
    this.#write = write;
    this.#maxGroup = Math.max(1, options.maxGroup ?? 256);
  }

  /** Writes `ops` in a synced batch, possibly shared with other callers; resolves once durable. */
  commit(ops: readonly Op[]): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ ops, resolve, reject });
      // Start on a microtask so commits made in the same tick already share the first batch.
      this.#flushing ??= Promise.resolve().then(() => this.#flush());
    });
  }

  /** Number of synced batches written so far. */
  get batches(): number {
    return this.#batches;
  }

  /** Number of commits that have been written (durably or not) so far. */
  get commits(): number {
    return this.#commits;
  }

  /** Resolves when nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      const group = this.#queue.splice(0, this.#maxGroup);
      this.#batches++;
      this.#commits += group.length;
      try {
        await this.#write(group.flatMap((w) => w.ops));
        for (const w of group) w.resolve();
      } catch (err) {
        for (const w of group) w.reject(err);
      }
    }
    // No await between the empty check and this line, so no commit can slip in unnoticed.
    this.#flushing = undefined;
  }
}
