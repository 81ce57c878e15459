/**
 * One message's delivery timeline (issue 13: "received, each stage's outcome, queued, each
 * attempt with the remote reply, delivered or failed"), read from what the store already
 * keeps: the metadata (arrival, findings, the delivery record once the message left the
 * queue) and the queue entry while it is queued. Nothing new is recorded for it, so the
 * store keeps, per recipient, the number of attempts and the last reply only: an attempt
 * step carries that reply with the count, and earlier replies are not shown because they
 * were never kept.
 */
import type { DeliveryRecord, DeliveryResult, FinishedRecipient, MessageMeta, QueueEntry, QueueRecipient } from '../../storage/records.js';

/** What a step of the timeline is. */
export type TimelineEvent =
  'received' | 'stage' | 'wrapped' | 'queued' | 'attempt' | 'held' | 'waiting' | 'delivered' | 'failed' | 'partly_delivered' | 'dropped' | 'quarantine_forward';

/** One step of a message's timeline, JSON as it is. */
export interface TimelineStep {
  event: TimelineEvent;
  /** ISO 8601 time, when the store knows it (a held entry waits for an admin, not a time). */
  at?: string;
  /** The step in words an admin reads. */
  summary: string;
  /** received: where from (`smtp`, `imap`, ...), and the alias when known. */
  source?: MessageMeta['source']['kind'];
  alias?: string;
  /** stage: the stage's name and its own sentences (what `policy test` prints). */
  stage?: string;
  findings?: string[];
  /** queued, attempt: the recipients the step is about. */
  recipients?: string[];
  /** attempt: attempts made so far for these recipients (this step is the last of them). */
  attempts?: number;
  /** attempt: the remote server's reply code, when one replied. */
  code?: number;
  /** attempt: the server's reply or the error, in words. */
  reply?: string;
  /** attempt: true when retrying cannot help. */
  permanent?: boolean;
  /** attempt: the route that accepted the recipients. */
  route?: string;
  /** a finished message: the delivery status notification sent back to the sender. */
  notification?: string;
  /** quarantine_forward: the forwarding message's id (its own timeline has each attempt). */
  forward?: string;
}

/** The timeline of `meta`, with its queue entry while it is queued. */
export function messageTimeline(meta: MessageMeta, entry?: QueueEntry): TimelineStep[] {
  const steps: TimelineStep[] = [received(meta)];
  for (const [stage, found] of Object.entries(meta.findings)) {
    const findings = Array.isArray(found.summary) ? found.summary.map(String) : [];
    steps.push({ event: 'stage', at: meta.receivedAt, stage, findings, summary: `${stage}: ${findings.length ? findings.join(' ') : 'nothing recorded'}` });
  }
  if (meta._WrappingMessageReason !== undefined) {
    steps.push({ event: 'wrapped', at: meta.receivedAt, summary: `stored as a wrapping message: ${meta._WrappingMessageReason}` });
  }
  const delivery = meta.delivery;
  if (entry) steps.push(...queueSteps(entry.kind, entry.queuedAt, entry.recipients, entry.lastError));
  // The entry was written with the message and left with the delivery record: queued at arrival.
  else if (delivery) steps.push(...queueSteps(delivery.kind, meta.receivedAt, delivery.recipients, undefined));
  if (entry?.held !== undefined) steps.push({ event: 'held', summary: `held until an admin acts: ${entry.held}` });
  else if (entry) steps.push({ event: 'waiting', at: entry.nextAttemptAt, summary: `next attempt due ${entry.nextAttemptAt}` });
  if (delivery) steps.push(finished(delivery));
  if (meta.quarantineForward) steps.push(...forwardSteps(meta.quarantineForward));
  return steps;
}

/** PCEmail "Email Quarantine Settings": forwarded to the quarantine mailbox, and (once known) when it left. */
function forwardSteps(f: NonNullable<MessageMeta['quarantineForward']>): TimelineStep[] {
  const steps: TimelineStep[] = [
    {
      event: 'quarantine_forward',
      at: f.queuedAt,
      forward: f.id,
      recipients: [f.to],
      summary: `forwarded to the quarantine mailbox ${f.to} as message ${f.id}: ${f.reason}`,
    },
  ];
  const error = f.lastError !== undefined ? `: ${f.lastError}` : '';
  if (f.status === 'queued')
    steps.push({ event: 'waiting', forward: f.id, summary: `forward ${f.id} queued${f.lastError !== undefined ? `, last error${error}` : ''}` });
  else if (f.status !== undefined)
    steps.push({
      event: f.status,
      ...(f.leftAt !== undefined ? { at: f.leftAt } : {}),
      forward: f.id,
      recipients: [f.to],
      summary: `forward ${f.id} to ${f.to} ${f.status.replace('_', ' ')}${error}`,
    });
  return steps;
}

function received(meta: MessageMeta): TimelineStep {
  const { kind, alias, remoteAddress, user } = meta.source;
  const from = [alias && `for alias ${alias}`, remoteAddress && `from ${remoteAddress}`, user && `as ${user}`].filter(Boolean).join(' ');
  return {
    event: 'received',
    at: meta.receivedAt,
    source: kind,
    ...(alias !== undefined ? { alias } : {}),
    summary: `received by ${kind}${from ? ` ${from}` : ''}, ${meta.receivedSize} bytes`,
  };
}

/** Queued, then one attempt step per last reply (recipients that got the same reply together), oldest first. */
function queueSteps(
  kind: QueueEntry['kind'],
  queuedAt: string,
  recipients: readonly (QueueRecipient | FinishedRecipient)[],
  lastError: DeliveryResult | undefined,
): TimelineStep[] {
  const addresses = recipients.map((r) => r.address);
  const steps: TimelineStep[] = [
    {
      event: 'queued',
      at: queuedAt,
      recipients: addresses,
      summary: `queued (${kind === 'relay' ? 'relay downstream' : kind === 'quarantine' ? 'to the quarantine mailbox' : 'outbound'}) for ${addresses.join(', ')}`,
    },
  ];
  const attempts = new Map<string, TimelineStep>();
  const replyOf = (last: DeliveryResult, recipient: QueueRecipient | FinishedRecipient | undefined) => {
    const key = `${last.at}\x00${last.message}\x00${recipient?.route ?? ''}\x00${recipient?.attempts ?? ''}`;
    const step = attempts.get(key);
    if (step) {
      if (recipient) step.recipients!.push(recipient.address);
      return;
    }
    attempts.set(key, {
      event: 'attempt',
      at: last.at,
      recipients: recipient ? [recipient.address] : [],
      ...(recipient ? { attempts: recipient.attempts } : {}),
      ...(last.code !== undefined ? { code: last.code } : {}),
      reply: last.message,
      permanent: last.permanent,
      ...(recipient?.route !== undefined && recipient.status === 'delivered' ? { route: recipient.route } : {}),
      summary: '',
    });
  };
  for (const r of recipients) if (r.last) replyOf(r.last, r);
  // A failure before any recipient was tried (connection, TLS, login) that no recipient's reply repeats.
  if (lastError && ![...attempts.values()].some((s) => s.at === lastError.at && s.reply === lastError.message)) replyOf(lastError, undefined);
  const ordered = [...attempts.values()].sort((a, b) => (a.at! < b.at! ? -1 : a.at! > b.at! ? 1 : 0));
  for (const step of ordered) step.summary = attemptSummary(step);
  return [...steps, ...ordered];
}

function attemptSummary(step: TimelineStep): string {
  const who = step.recipients!.length ? step.recipients!.join(', ') : 'the route';
  const nth = step.attempts !== undefined ? `attempt ${step.attempts} for ${who}` : `attempt for ${who}`;
  const reply = `${step.code !== undefined && !step.reply!.startsWith(String(step.code)) ? `${step.code} ` : ''}${step.reply}`;
  const verdict = step.route !== undefined ? `accepted via ${step.route}` : step.permanent ? 'refused for good' : 'to be tried again';
  return `${nth}: ${verdict}: ${reply}`;
}

function finished(delivery: DeliveryRecord): TimelineStep {
  const count = (status: FinishedRecipient['status']) => delivery.recipients.filter((r) => r.status === status).map((r) => r.address);
  const parts = [
    count('delivered').length && `delivered to ${count('delivered').join(', ')}`,
    count('failed').length && `failed for ${count('failed').join(', ')}`,
    count('dropped').length && `not sent to ${count('dropped').join(', ')}`,
  ].filter(Boolean);
  const words = delivery.status.replace('_', ' ');
  return {
    event: delivery.status,
    at: delivery.finishedAt,
    ...(delivery.dsnId !== undefined ? { notification: delivery.dsnId } : {}),
    summary: [
      `${words} after ${delivery.attempts} attempt${delivery.attempts === 1 ? '' : 's'}${parts.length ? `: ${parts.join('; ')}` : ''}`,
      delivery.reason,
      delivery.dsnId !== undefined ? `notification ${delivery.dsnId} sent back` : undefined,
    ]
      .filter(Boolean)
      .join('; '),
  };
}
