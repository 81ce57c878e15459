/**
 * The outbound queue's rules that hold whatever store keeps it: one entry per stored message
 * still to be sent (mail submitted for an alias) or forwarded (inbound mail relayed to a
 * downstream server), tracked recipient by recipient so that a message partly delivered is
 * never sent twice to those who got it. An entry is written with its message (a `queue-entry`
 * side record, storage/store.ts), so a message is accepted, stored and queued at once; it
 * leaves with the outcome recorded on the message's metadata (`finishQueueEntry`).
 */
import type { Store } from './store.js';
import type { DeliveryRecord, FinishedRecipient, QueueEntry } from './records.js';
import { storeErrors } from '../lib/errors.js';

/** Status of a finished entry from its recipients. */
export function outcomeOf(entry: QueueEntry): DeliveryRecord['status'] {
  const delivered = entry.recipients.filter((r) => r.status === 'delivered').length;
  if (delivered === entry.recipients.length) return 'delivered';
  return delivered === 0 ? 'failed' : 'partly_delivered';
}

/** The record of an entry an admin took out of the queue unsent (`mailgate queue drop`). */
export function droppedRecord(entry: QueueEntry): DeliveryRecord {
  // Pending means "will be tried again": after a drop nobody will try, and the record must say so.
  const recipients = entry.recipients.map((r): FinishedRecipient => (r.status === 'pending' ? { ...r, status: 'dropped' } : r));
  return {
    kind: entry.kind,
    status: 'dropped',
    finishedAt: new Date().toISOString(),
    attempts: entry.attempts,
    recipients,
    reason: 'dropped by an admin (mailgate queue drop)',
  };
}

/** The entry, or QUEUE_ENTRY_NOT_FOUND. */
export async function requireQueueEntry(store: Store, id: string): Promise<QueueEntry> {
  const entry = await store.getQueueEntry(id);
  if (!entry) throw storeErrors.queueEntryNotFound(id);
  return entry;
}

/** The entries `queue retry` names: one by id, or all (only the held ones with `heldOnly`). */
export async function entriesToRetry(store: Store, id: string | undefined, opts: { heldOnly?: boolean } = {}): Promise<QueueEntry[]> {
  if (id !== undefined) return [await requireQueueEntry(store, id)];
  const all = await store.listQueue();
  return opts.heldOnly ? all.filter((e) => e.held !== undefined) : all;
}

/** The entry made due now and no longer held (`queue retry`); the caller saves it. */
export function dueNow(entry: QueueEntry): QueueEntry {
  const due: QueueEntry = { ...entry, nextAttemptAt: new Date().toISOString() };
  delete due.held;
  return due;
}

/** Takes an entry out of the queue unsent, recording the drop on its message (`queue drop`). */
export async function dropQueueEntry(store: Store, entry: QueueEntry): Promise<void> {
  await store.finishQueueEntry(entry.id, droppedRecord(entry));
}
