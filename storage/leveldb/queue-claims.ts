/**
 * Queue claims on LevelDB (storage/store.ts, QueueClaims): one process holds the database, so
 * one node delivers the whole queue and every claim is its own. Nothing is read or written to
 * grant, renew or release one; saving and finishing are the store's plain queue writes. The
 * dispatcher, seeing `shared` false, schedules from memory as it always did.
 */
import type { DeliveryRecord, QueueEntry } from '../records.js';
import type { QueueClaims, Store } from '../store.js';

export class OneNodeQueueClaims implements QueueClaims {
  readonly shared = false;
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  async claimDue(limit: number): Promise<{ entry: QueueEntry }[]> {
    const now = Date.now();
    const due = (await this.#store.listQueue()).filter((e) => e.held === undefined && Date.parse(e.nextAttemptAt) <= now);
    return due.slice(0, limit).map((entry) => ({ entry }));
  }

  async claim(id: string, _leaseMs: number, opts: { onlyIfDue?: boolean } = {}): Promise<QueueEntry | undefined> {
    const entry = await this.#store.getQueueEntry(id);
    if (entry && opts.onlyIfDue && Date.parse(entry.nextAttemptAt) > Date.now()) return undefined;
    return entry;
  }

  /** One node: nothing is recorded of its attempts in progress (its dispatcher knows them). */
  claims(): Promise<{ id: string; node: string }[]> {
    return Promise.resolve([]);
  }

  renew(ids: readonly string[]): Promise<string[]> {
    return Promise.resolve([...ids]);
  }

  release(): Promise<void> {
    return Promise.resolve();
  }

  async saveClaimed(entry: QueueEntry): Promise<boolean> {
    await this.#store.putQueueEntries([entry]);
    return true;
  }

  async finishClaimed(id: string, delivery: DeliveryRecord): Promise<boolean> {
    await this.#store.finishQueueEntry(id, delivery);
    return true;
  }
}
