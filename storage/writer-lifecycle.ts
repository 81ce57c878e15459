/**
 * The life of a message writer (storage/store.ts MessageWriter), the same in every store:
 * writing, then one commit (committed or failed) or an abort. A commit refuses once the writer
 * left `writing`; an abort refuses once a commit began, runs its removal once (a second
 * abort() shares it) and lets a later abort() try again when the removal failed.
 */
import type { MessageMeta } from './records.js';

type WriterState = 'writing' | 'committing' | 'committed' | 'failed' | 'aborted';

/** The state of one store's MessageWriter for message `id`; the store does the writing. */
export class WriterLifecycle {
  readonly #id: string;
  #state: WriterState = 'writing';
  #commitTried = false;
  #aborting: Promise<void> | undefined;

  constructor(id: string) {
    this.#id = id;
  }

  /** Whether a commit was begun: its answer may have been lost while it landed, so an abort must look before it removes. */
  get commitTried(): boolean {
    return this.#commitTried;
  }

  /** The error for bytes written once the writer is no longer writing; undefined while it is. */
  writeRefusal(): Error | undefined {
    return this.#state === 'writing' ? undefined : new Error(`message ${this.#id}: write after the writer was ${this.#state}`);
  }

  /**
   * Runs the store's COMMIT for META once the stream has ended (WRITABLE_ENDED), tracked in
   * COMMITS (the store's close waits for them) until it settles; the writer is then committed,
   * or failed with COMMIT's error.
   */
  async commit(meta: MessageMeta, writableEnded: boolean, commits: Set<Promise<unknown>>, commit: () => Promise<void>): Promise<void> {
    if (this.#state !== 'writing') throw new Error(`message ${this.#id}: cannot commit, the writer was ${this.#state}`);
    if (meta.id !== this.#id) throw new TypeError(`message ${this.#id}: commit with metadata of ${meta.id}`);
    if (!writableEnded) throw new Error(`message ${this.#id}: commit before the stream was ended`);
    this.#state = 'committing';
    this.#commitTried = true;
    const committing = commit();
    commits.add(committing);
    try {
      await committing;
      this.#state = 'committed';
    } catch (err) {
      this.#state = 'failed';
      throw err;
    } finally {
      commits.delete(committing);
    }
  }

  /** Runs the store's REMOVE of what the message left, once; rejects once a commit has begun. */
  abort(remove: () => Promise<void>): Promise<void> {
    if (this.#state === 'committing' || this.#state === 'committed') {
      return Promise.reject(new Error(`message ${this.#id}: cannot abort, the writer was ${this.#state}`));
    }
    this.#state = 'aborted';
    this.#aborting ??= remove().catch((err: unknown) => {
      this.#aborting = undefined; // let a later abort() try again
      throw err;
    });
    return this.#aborting;
  }
}
