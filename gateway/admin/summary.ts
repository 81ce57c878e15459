/**
 * The gateway at a glance (`mailgate status`, `GET /api/v1/summary`, the console's dashboard):
 * messages of the last hour and day by source with what the policy did to them, the queue by
 * state, the quarantine's size, and each alias's health. Counted from the store's records, so
 * a restart loses nothing and every node of a fleet sees the same numbers.
 */
import type { MessageMeta, QueueEntry } from '../../storage/records.js';
import { EXCEPTION_QUEUE_TAG } from '../../policy/delivery-exceptions/stage.js';
import type { AliasRow } from './alias-rows.js';

/** Messages of one source (`smtp`, `submission`, `imap`, `pop3`, `cli`, `dsn`) in a time window, by what happened to them. */
export interface TrafficRow {
  source: MessageMeta['source']['kind'];
  messages: number;
  /** Could not be processed: stored wrapped (Genesys). */
  wrapped: number;
  /** At least one attachment blocked. */
  blocked: number;
  /** Tagged for the exception queue: a bounce, an auto-reply, a feedback report. */
  exceptions: number;
  /** Something was masked. */
  masked: number;
  /** Left the queue delivered (wholly or in part). */
  delivered: number;
  /** Left the queue failed or dropped. */
  failed: number;
}

export interface GatewaySummary {
  /** When it was counted (ISO 8601). */
  at: string;
  lastHour: TrafficRow[];
  lastDay: TrafficRow[];
  /** Set when the day had more messages than are counted: the counts cover the newest this many. */
  countedAtMost?: number;
  queue: { total: number; waiting: number; retrying: number; held: number };
  quarantined: number;
  aliases: AliasRow[];
}

/** Messages read for the counts at most: a dashboard refresh must stay cheap on a busy day. */
export const SUMMARY_SCAN_LIMIT = 20_000;

const HOUR = 3_600_000;

/** The traffic rows of MESSAGES (newest first) received at or after SINCE, one per source that has any. */
export function traffic(messages: readonly MessageMeta[], since: number): TrafficRow[] {
  const rows = new Map<string, TrafficRow>();
  for (const m of messages) {
    if (Date.parse(m.receivedAt) < since) continue;
    const kind = m.source.kind;
    let row = rows.get(kind);
    if (!row) rows.set(kind, (row = { source: kind, messages: 0, wrapped: 0, blocked: 0, exceptions: 0, masked: 0, delivered: 0, failed: 0 }));
    row.messages++;
    if (m._WrappingMessageReason !== undefined) row.wrapped++;
    if (m.attachments.some((a) => a.blocked)) row.blocked++;
    if (m.tags.includes(EXCEPTION_QUEUE_TAG)) row.exceptions++;
    if (Number(m.findings['masking']?.['total'] ?? 0) > 0) row.masked++;
    const status = m.delivery?.status;
    if (status === 'delivered' || status === 'partly_delivered') row.delivered++;
    if (status === 'failed' || status === 'dropped') row.failed++;
  }
  return [...rows.values()].sort((a, b) => b.messages - a.messages || a.source.localeCompare(b.source));
}

/** The queue by state: waiting for a first attempt, retrying after a failure, held for an admin. */
export function queueStates(entries: readonly QueueEntry[]): GatewaySummary['queue'] {
  const q = { total: entries.length, waiting: 0, retrying: 0, held: 0 };
  for (const e of entries) {
    if (e.held !== undefined) q.held++;
    else if (e.attempts > 0) q.retrying++;
    else q.waiting++;
  }
  return q;
}

/** The summary at NOW of the last day's MESSAGES (newest first, at most SUMMARY_SCAN_LIMIT read). */
export function summarise(now: Date, messages: readonly MessageMeta[], queue: readonly QueueEntry[], quarantined: number, aliases: AliasRow[]): GatewaySummary {
  const t = now.getTime();
  return {
    at: now.toISOString(),
    lastHour: traffic(messages, t - HOUR),
    lastDay: traffic(messages, t - 24 * HOUR),
    ...(messages.length >= SUMMARY_SCAN_LIMIT ? { countedAtMost: SUMMARY_SCAN_LIMIT } : {}),
    queue: queueStates(queue),
    quarantined,
    aliases,
  };
}
