/**
 * Stops the store from writing on after a failed write, until the database is reopened.
 *
 * When LevelDB cannot append to its log (a full disk: classic-level reports `LEVEL_IO_ERROR`
 * with `IO error: <dir>/000003.log: No space left on device`, and no errno), the log keeps the
 * torn bytes and LevelDB goes on appending after them. Writes that then succeed, synced or
 * not, are readable until the process stops, but the next open cannot read past the tear:
 * measured on a full tmpfs, three messages committed after the disk had room again were gone
 * at the next open. A failed background compaction likewise makes LevelDB refuse every write
 * until it is reopened. So from the first failed write on, every write is refused with
 * `STORE_UNAVAILABLE` until the store has reopened the database, which recovers the log up
 * to the tear into a table and starts a new log.
 *
 * A write in flight when another one failed may sit after the tear: it is reported as
 * `STORE_WRITE_UNCERTAIN` even if LevelDB said it succeeded. LevelDB orders writes and
 * classic-level reports them in that order, so a write reported done before the failure was
 * seen is before the tear and safe.
 */
import { storeErrors } from '../../lib/errors.js';
import type { RootDb, StoreOp } from './layout.js';

/**
 * The abstract-level methods through which every write of the root and its sublevels passes
 * (not a chained `db.batch()`, which the store does not use).
 */
const WRITE_METHODS = ['_put', '_del', '_batch', '_clear'] as const;
type WriteMethod = (typeof WRITE_METHODS)[number];

/** Watches the writes of one database; see the module comment. */
export class WriteGuard {
  #failures = 0;
  #failure: unknown;
  #lastFailure: unknown;
  readonly #onFailure: (err: unknown) => void;

  /** Wraps the write methods of `db`; `onFailure` is called once per failure, to reopen the database. */
  constructor(db: RootDb, onFailure: (err: unknown) => void) {
    this.#onFailure = onFailure;
    // The implementation methods (abstract-level's private API for implementors): sublevels
    // write through the root's public methods, which call these once the arguments are encoded.
    const methods = db as unknown as Record<WriteMethod, (...args: unknown[]) => Promise<void>>;
    for (const name of WRITE_METHODS) {
      const write = methods[name].bind(db);
      methods[name] = (...args) => this.#guarded(() => write(...args));
    }
  }

  /** The failure the database has not been reopened since, if any. */
  get failure(): unknown {
    return this.#failure;
  }

  /** Lets writes through again: the database has been reopened. */
  reopened(): void {
    this.#failure = undefined;
  }

  async #guarded(write: () => Promise<void>): Promise<void> {
    if (this.#failure !== undefined) throw storeErrors.storeUnavailable(this.#failure);
    const failures = this.#failures;
    try {
      await write();
    } catch (err) {
      if (this.#failure === undefined && !isNotOpen(err)) {
        this.#failures++;
        this.#failure = err;
        this.#lastFailure = err;
        this.#onFailure(err);
      }
      throw err;
    }
    if (this.#failures !== failures) throw storeErrors.writeUncertain(this.#lastFailure);
  }
}

/** Whether `err` is a write reported as `STORE_WRITE_UNCERTAIN`. */
export function isWriteUncertain(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'STORE_WRITE_UNCERTAIN';
}

/**
 * Whether the database holds what `ops` wrote: every put's value, no deleted key. A batch is
 * atomic, so after a reopen this tells whether an uncertain batch was recovered.
 */
export async function batchApplied(db: RootDb, ops: readonly StoreOp[]): Promise<boolean> {
  for (const op of ops) {
    const level = (op.sublevel ?? db) as unknown as { get(key: string): Promise<unknown>; has(key: string): Promise<boolean> };
    if (op.type === 'del') {
      if (await level.has(op.key)) return false;
    } else if (!sameValue(await level.get(op.key), op.value)) {
      return false;
    }
  }
  return true;
}

function sameValue(stored: unknown, written: unknown): boolean {
  if (Buffer.isBuffer(written) || written instanceof Uint8Array) {
    return (
      stored instanceof Uint8Array &&
      Buffer.compare(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength), Buffer.from(written.buffer, written.byteOffset, written.byteLength)) ===
        0
    );
  }
  if (typeof written === 'string') return stored === written;
  return stored !== undefined && JSON.stringify(stored) === JSON.stringify(written);
}

function isNotOpen(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return code === 'LEVEL_DATABASE_NOT_OPEN' || code === 'LEVEL_DATABASE_NOT_CLOSED';
}
