/**
 * An admin's retry and drop of queued messages (`mailgate queue retry|drop`, the admin API),
 * written once for both cases: while the gateway runs its dispatcher is told (a retried
 * message is tried at once, a dropped one never again, nothing is dropped under an attempt in
 * progress); while it is stopped only the store changes, and the next start picks it up.
 *
 * On a queue several nodes share, the admin's node first claims the entry, as a delivering
 * node would: one another node is delivering (or has claimed and is about to) is not
 * overwritten under its attempt; a retry of it is as soon as it gets, a drop of it is refused
 * with QUEUE_BUSY, as on one node.
 */
import type { Store } from '../../storage/store.js';
import type { QueueEntry } from '../../storage/records.js';
import { dropQueueEntry, droppedRecord, dueNow, entriesToRetry, requireQueueEntry } from '../../storage/queue.js';
import { errors, storeErrors } from '../../lib/errors.js';

/** An admin's claim lasts only the two writes of a retry or drop; if the node dies between them, it expires soon. */
const ADMIN_CLAIM_MS = 30_000;

/** What the running dispatcher does around an admin's retry or drop. */
export interface QueueWorker {
  /** Whether the entry is being sent at this moment. */
  isSending(id: string): boolean;
  /** Forgets the entry's timer: it is about to leave the queue. */
  forget(id: string): void;
  /** Tries the entry (made due by an admin, held or not) as soon as a slot is free. */
  tryNow(entry: QueueEntry): void;
  /** Counts and logs an admin's drop. */
  dropped(entry: QueueEntry): void;
  /** An admin on another node asked for a retry of an entry this node may be attempting: its next attempt, if one is needed, is at once. */
  retryAsked(id: string): void;
}

/** Makes the entry (or, without an id, every entry, or every held one) due now, held ones included; returns how many. */
export async function retryQueued(
  store: Store,
  id: string | undefined,
  worker?: QueueWorker,
  opts: { heldOnly?: boolean; claimedElsewhere?: (id: string) => void } = {},
): Promise<number> {
  const entries = await entriesToRetry(store, id, opts);
  if (store.queueClaims.shared) {
    for (const entry of entries) {
      if (worker?.isSending(entry.id)) continue;
      const claimed = await store.queueClaims.claim(entry.id, ADMIN_CLAIM_MS);
      if (!claimed) {
        // Another node is delivering it (or it just left the queue): that node is told (gateway/admin/fleet.ts).
        opts.claimedElsewhere?.(entry.id);
        continue;
      }
      const due = dueNow(claimed);
      if (await store.queueClaims.saveClaimed(due, { release: true })) worker?.tryNow(due);
    }
    return entries.length;
  }
  // One being sent right now is as soon as it gets: counted, and not overwritten under the attempt.
  const due = entries.filter((e) => !worker?.isSending(e.id)).map(dueNow);
  if (due.length > 0) await store.putQueueEntries(due);
  for (const entry of due) worker?.tryNow(entry);
  return entries.length;
}

/** Takes an entry out of the queue unsent; its message stays, with the drop recorded on its metadata. */
export async function dropQueued(store: Store, id: string, worker?: QueueWorker): Promise<QueueEntry> {
  const entry = await requireQueueEntry(store, id);
  if (worker?.isSending(id)) throw errors.queueBusy(id);
  if (store.queueClaims.shared) {
    const claimed = await store.queueClaims.claim(id, ADMIN_CLAIM_MS);
    if (!claimed) throw (await store.getQueueEntry(id)) ? errors.queueBusy(id) : storeErrors.queueEntryNotFound(id);
    worker?.forget(id);
    // The entry as claimed: the recipients another node delivered meanwhile stay delivered in the record.
    if (!(await store.queueClaims.finishClaimed(id, droppedRecord(claimed)))) throw errors.queueBusy(id);
    worker?.dropped(claimed);
    return claimed;
  }
  worker?.forget(id);
  await dropQueueEntry(store, entry);
  worker?.dropped(entry);
  return entry;
}
