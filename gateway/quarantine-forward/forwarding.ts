/**
 * Quarantine forwarding (PCEmail "Email Quarantine Settings"; issue 14): a bad inbound
 * message stays in the store as today and is forwarded over SMTP to the quarantine mailbox,
 * where a person works it. The forward goes through the durable outbound queue like any mail
 * (retries, delivery status notifications): its queue entry is committed with the original
 * (a side record), and the forwarding message is made from the original when the dispatcher
 * first finds it missing, so a crash between the two cannot lose it.
 */
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Store } from '../../storage/store.js';
import type { MessageMeta, QuarantineForward, QueueEntry } from '../../storage/records.js';
import { newMessageId } from '../../storage/ids.js';
import { ingestMessage, type CommitHook } from '../../ingest/ingest.js';
import { quarantineSettings } from './settings.js';
import { forwardReason } from './reason.js';
import { attachedBytes } from './original-bytes.js';
import { forwardingMessage } from './forward-message.js';

/** The commit hook that queues the forward of each message that goes to the quarantine mailbox; `queued` tells the dispatcher once it is durable. */
export function quarantineForwarding(config: Config, logger: Logger, queued: (entry: QueueEntry) => void): CommitHook {
  return (meta) => {
    const settings = quarantineSettings(config, meta.source.alias);
    if (settings.forwardTo === undefined) return undefined;
    const why = forwardReason(meta, settings, config);
    if (!why) return undefined;
    const now = new Date().toISOString();
    const id = newMessageId();
    const entry: QueueEntry = {
      id,
      kind: 'quarantine',
      ...(meta.source.alias !== undefined ? { alias: meta.source.alias } : {}),
      mailFrom: settings.from,
      requestedRecipients: [settings.forwardTo],
      recipients: [{ address: settings.forwardTo, status: 'pending', attempts: 0 }],
      queuedAt: now,
      attempts: 0,
      nextAttemptAt: now,
      quarantine: { original: meta.id, reason: why.reason },
    };
    meta.quarantineForward = { to: settings.forwardTo, id, reason: why.reason, queuedAt: now };
    return {
      sideRecords: [{ type: 'queue-entry', entry }],
      committed() {
        logger.info({ msg_id: meta.id, forward_id: id, to: settings.forwardTo, reason: why.reason }, 'forwarding to the quarantine mailbox');
        queued(entry);
      },
    };
  };
}

/**
 * Stores the forwarding message of a `quarantine` queue entry, under the entry's id (no
 * policy stage runs on it: it is ours, and carries the original as it was stored). Undefined
 * when the original is gone (deleted meanwhile): nothing is left to forward.
 */
export async function storeForwardingMessage(deps: { store: Store; config: Config; logger: Logger }, entry: QueueEntry): Promise<MessageMeta | undefined> {
  const { store, config, logger } = deps;
  const q = entry.quarantine;
  if (!q) return undefined;
  const original = await store.getMessage(q.original);
  if (!original) return undefined;
  const why = forwardReason(
    original,
    { ...quarantineSettings(config, original.source.alias), wrapped: true, autoResponses: true, blockedAttachments: true },
    config,
  );
  const attach = await attachedBytes(store, original);
  const details = [
    ...(why?.reason === q.reason ? why.details : []),
    ...(attach.what === 'stored' && original._WrappingMessageReason !== undefined
      ? ['The attachment policy blocks something in the original, so the wrapping message mailgate stored is attached instead.']
      : []),
  ];
  const bytes = forwardingMessage({
    from: entry.mailFrom,
    to: entry.recipients.map((r) => r.address).join(', '),
    reason: q.reason,
    details,
    originalSubject: original.subject,
    originalId: original.id,
    messageId: `${entry.id}.quarantine@${config.smtp.hostname}`,
    original: attach.open,
  });
  return ingestMessage({ store, logger, stages: () => [] }, Readable.from(bytes), {
    envelope: { mailFrom: entry.mailFrom, rcptTo: entry.requestedRecipients },
    source: { kind: 'quarantine', ...(entry.alias !== undefined ? { alias: entry.alias } : {}) },
    direction: 'outbound',
    id: entry.id,
    wrapUnparsable: false,
  });
}

/**
 * `forward` as it stands now, read from the forwarding message's queue entry or delivery
 * record (the original's record is written once, with it): what `messages show` prints.
 */
export async function forwardNow(store: Store, forward: QuarantineForward): Promise<QuarantineForward> {
  const base: QuarantineForward = { to: forward.to, id: forward.id, reason: forward.reason, queuedAt: forward.queuedAt };
  const entry = await store.getQueueEntry(forward.id);
  if (entry) {
    const last = entry.held ?? entry.lastError?.message ?? entry.recipients.find((r) => r.last)?.last?.message;
    return { ...base, status: 'queued', ...(last !== undefined ? { lastError: last } : {}) };
  }
  const made = await store.getMessage(forward.id);
  // Neither queued nor made: the entry left before the forwarding message was made (an admin dropped it).
  if (!made) return { ...base, status: 'dropped', lastError: 'left the queue unsent before the forwarding message was made' };
  const delivery = made.delivery;
  if (!delivery) return { ...base, status: 'queued' };
  const failure = delivery.status === 'delivered' ? undefined : (delivery.reason ?? delivery.recipients.find((r) => r.status !== 'delivered')?.last?.message);
  return { ...base, status: delivery.status, leftAt: delivery.finishedAt, ...(failure !== undefined ? { lastError: failure } : {}) };
}
