/**
 * The outbound queue in the store: one entry per stored message that is still to be sent
 * (mail submitted for an alias) or forwarded (inbound mail relayed to a downstream server),
 * tracked recipient by recipient so that a message partly delivered is never sent twice to
 * those who got it. The entry is written in the message's own synced batch, so a message is
 * accepted, stored and queued at once; it is removed in the batch that records the outcome
 * on the message's metadata.
 */
import type { Store, StoreOp } from './store.js';
import { storeErrors } from '../../lib/errors.js';
import type { MessageMeta } from '../records.js';

/** Where one recipient stands. */
export type RecipientStatus = 'pending' | 'delivered' | 'failed';

/** The last thing a server (or the network) said about a recipient or a route. */
export interface DeliveryResult {
  /** ISO 8601 time of the attempt. */
  at: string;
  /** SMTP reply code, when a server replied. */
  code?: number;
  /** The server's reply or the error, in words. */
  message: string;
  /** True when retrying cannot help (a 5xx reply). */
  permanent: boolean;
}

/** One envelope recipient of a queued message. */
export interface QueueRecipient {
  address: string;
  status: RecipientStatus;
  /** Attempts made for this recipient. */
  attempts: number;
  /** Relay entries: the `[[relay]]` this recipient is forwarded through; absent: the partition default SMTP. */
  relay?: string;
  /** The last reply or error for this recipient. */
  last?: DeliveryResult;
  /** When the server accepted it, and through which route. */
  deliveredAt?: string;
  route?: string;
}

/** A message waiting to be delivered. */
export interface QueueEntry {
  /** The stored message's id. */
  id: string;
  /** `outbound`: submitted for an alias to send; `relay`: inbound mail forwarded downstream. */
  kind: 'outbound' | 'relay';
  /** Outbound: the alias it is sent from (resolved again at each attempt: the alias may be gone). */
  alias?: string;
  /** Envelope sender used upstream ('' for the null sender of a delivery status notification). */
  mailFrom: string;
  /** Envelope recipients the client gave, before automatic BCC or send_mail_to (for `queue show`). */
  requestedRecipients: string[];
  recipients: QueueRecipient[];
  /** When it was queued (ISO 8601). */
  queuedAt: string;
  /** Attempts made for the message as a whole. */
  attempts: number;
  /** When the next attempt is due (ISO 8601). */
  nextAttemptAt: string;
  lastAttemptAt?: string;
  /** Set while the message cannot be sent until an admin acts (no route): the reason, in words. */
  held?: string;
  /** The last failure that was not about one recipient (connection, TLS, authentication). */
  lastError?: DeliveryResult;
  /** True for a delivery status notification: it never gets one of its own. */
  dsn?: boolean;
}

/** A recipient of a message that left the queue: `dropped` when an admin took it out before it was delivered or failed. */
export interface FinishedRecipient extends Omit<QueueRecipient, 'status'> {
  status: RecipientStatus | 'dropped';
}

/** What happened to a message that left the queue; on its metadata as `delivery`. */
export interface DeliveryRecord {
  kind: QueueEntry['kind'];
  status: 'delivered' | 'failed' | 'partly_delivered' | 'dropped';
  finishedAt: string;
  attempts: number;
  recipients: FinishedRecipient[];
  /** Id of the delivery status notification stored and queued for the sender, if one was. */
  dsnId?: string;
  /** Why it was dropped, or the last route-level error. */
  reason?: string;
}

/** The put of a new or updated queue entry, for a batch. */
export function queuePutOp(store: Store, entry: QueueEntry): StoreOp {
  return { type: 'put', sublevel: store.sublevels.queue, key: entry.id, value: entry };
}

/** Saves an entry durably (after each attempt: a recipient delivered must stay delivered). */
export async function saveQueueEntry(store: Store, entry: QueueEntry): Promise<void> {
  await store.commitBatch([queuePutOp(store, entry)]);
}

export function getQueueEntry(store: Store, id: string): Promise<QueueEntry | undefined> {
  return store.sublevels.queue.get(id);
}

/** Every queued message, oldest first (ids sort by time). */
export function listQueue(store: Store): Promise<QueueEntry[]> {
  return store.sublevels.queue.values().all();
}

/** Status of a finished entry from its recipients. */
export function outcomeOf(entry: QueueEntry): DeliveryRecord['status'] {
  const delivered = entry.recipients.filter((r) => r.status === 'delivered').length;
  if (delivered === entry.recipients.length) return 'delivered';
  return delivered === 0 ? 'failed' : 'partly_delivered';
}

/**
 * The ops that take an entry out of the queue and record `record` on the message's metadata,
 * for one batch (with the notification's own commit, when one goes back to the sender).
 */
export async function finishOps(store: Store, entry: QueueEntry, record: DeliveryRecord): Promise<StoreOp[]> {
  const { queue, messages } = store.sublevels;
  const ops: StoreOp[] = [{ type: 'del', sublevel: queue, key: entry.id }];
  // Read now, not earlier: a quarantine restore may have rewritten the metadata meanwhile.
  const meta = await messages.get(entry.id);
  // A message removed meanwhile has nothing to record on; the queue entry still goes.
  if (meta) ops.push({ type: 'put', sublevel: messages, key: entry.id, value: { ...meta, delivery: record } satisfies MessageMeta });
  return ops;
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

/** The error for an id that is not queued, alike through the gateway and on a stopped store. */
export const queueEntryNotFound = storeErrors.queueEntryNotFound;

/** The entry, or `queueEntryNotFound`. */
export async function requireQueueEntry(store: Store, id: string): Promise<QueueEntry> {
  const entry = await getQueueEntry(store, id);
  if (!entry) throw queueEntryNotFound(id);
  return entry;
}

/** The entries `queue retry` names: one by id, or all. */
export async function entriesToRetry(store: Store, id: string | undefined): Promise<QueueEntry[]> {
  return id === undefined ? listQueue(store) : [await requireQueueEntry(store, id)];
}

/** The entry made due now and no longer held (`queue retry`); the caller saves it. */
export function dueNow(entry: QueueEntry): QueueEntry {
  const due: QueueEntry = { ...entry, nextAttemptAt: new Date().toISOString() };
  delete due.held;
  return due;
}

/** Takes an entry out of the queue unsent, recording the drop on its message (`queue drop`). */
export async function dropQueueEntry(store: Store, entry: QueueEntry): Promise<void> {
  await store.commitBatch(await finishOps(store, entry, droppedRecord(entry)));
}
