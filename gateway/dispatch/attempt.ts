/**
 * One delivery attempt of a queued message: its pending recipients, grouped by route, each
 * group sent in one SMTP transaction of the stored bytes; every recipient's outcome recorded
 * on the (returned) entry. What is permanent (5xx) fails now; everything else stays pending
 * for the next attempt. The caller saves the entry and decides about retries.
 *
 * A recipient the server accepted must be on record before anything else happens: the time
 * between the server's 250 and the synced write that records it is the one window in which a
 * crash sends a recipient twice (the protocol cannot close it). So nothing is logged here; the
 * caller saves first and logs after (`logAttempt`), and when an entry goes out in several
 * transactions, each one's accepted recipients are saved before the next one starts.
 */
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Store } from '../../storage/store.js';
import type { DeliveryResult, MessageMeta, QueueEntry, QueueRecipient } from '../../storage/records.js';
import { outboundRouting, quarantineRouting, relayRouting, type Route, type Routing } from './routes.js';
import type { SendResult, Transports } from './transports.js';
import { traceHeaders } from './trace.js';
import { oneLine } from '../../lib/text.js';

/** Characters of a remote server's reply kept in a delivery result: enough to read the reason, not a hostile server's novel. */
const MAX_REPLY_TEXT = 500;

export interface AttemptDeps {
  store: Store;
  config: Config;
  transports: Transports;
  logger: Logger;
}

/** What one transaction did, recipient by recipient, or the failure that hit them all. */
interface GroupOutcome {
  route: Route;
  sent?: SendResult;
  /** A failure that is not about one recipient: connection, TLS, authentication, MAIL FROM, DATA. */
  failure?: DeliveryResult;
  authFailed?: boolean;
}

/** What one transaction of an attempt did, for its log line (written once it is on record). */
export interface TransactionReport {
  route: string;
  delivered: string[];
  failed: string[];
  deferred: string[];
  reason?: string;
}

/** The entry after an attempt (not yet saved) and what each of its transactions did. */
export interface Attempt {
  entry: QueueEntry;
  transactions: TransactionReport[];
}

/** Messages up to this size are read from the store into one buffer and handed to the SMTP client whole; larger ones stream. */
const WHOLE_MESSAGE_MAX = 1024 * 1024;

export interface AttemptOptions {
  /**
   * Saves the entry between transactions of a message sent in several (relayed recipients of
   * different downstreams), so that a crash in a later one sends nobody of an earlier one twice.
   */
  saveProgress?: (entry: QueueEntry) => Promise<void>;
  /** The message's bytes as stored, when the caller has them (just submitted): not read from the store. */
  raw?: Buffer;
}

/** Runs one attempt; returns the entry as it stands after it (not yet saved). */
export async function attemptDelivery(deps: AttemptDeps, entry: QueueEntry, meta: MessageMeta, opts: AttemptOptions = {}): Promise<Attempt> {
  const { saveProgress } = opts;
  const now = new Date();
  const next: QueueEntry = { ...entry, recipients: entry.recipients.map((r) => ({ ...r })) };
  delete next.held;
  const groups = new Map<string, QueueRecipient[]>();
  for (const r of next.recipients) {
    if (r.status !== 'pending') continue;
    const key = entry.kind === 'relay' ? (r.relay ?? '') : '';
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  let tried = false;
  const transactions: TransactionReport[] = [];
  let left = groups.size;
  for (const [relay, recipients] of groups) {
    left--;
    // A relayed recipient without a [[relay]] name goes out through the partition default SMTP.
    const routing: Routing =
      entry.kind === 'quarantine'
        ? quarantineRouting(deps.config, entry.alias)
        : entry.kind === 'relay' && relay
          ? relayRouting(deps.config, relay)
          : outboundRouting(deps.config, entry.alias);
    if (routing.held !== undefined) {
      next.held = routing.held;
      continue;
    }
    tried = true;
    let outcome = await sendGroup(deps, routing.route, entry, meta, recipients, opts.raw);
    const fallback = routing.route.withoutAuth;
    if (outcome.authFailed && fallback) {
      // Cisco guide, "Use SMTP: When authorization fails": the same server, as plain SMTP.
      deps.logger.warn(
        { msg_id: entry.id, route: routing.route.name, reason: outcome.failure?.message },
        'ESMTP authentication failed; sending through the same server without authentication (use_smtp = "when_auth_fails")',
      );
      outcome = await sendGroup(deps, fallback, entry, meta, recipients, opts.raw);
    }
    transactions.push(record(outcome, recipients, now));
    if (outcome.failure) next.lastError = outcome.failure;
    if (left > 0 && saveProgress && recipients.some((r) => r.status === 'delivered')) await saveProgress(next);
  }
  if (tried) {
    next.attempts = entry.attempts + 1;
    next.lastAttemptAt = now.toISOString();
  }
  return { entry: next, transactions };
}

/**
 * The attempt's log line, one per message and attempt (the line an admin reads for "where did
 * my mail go"); `outcome` when the message left the queue with it.
 */
export function logAttempt(log: Logger, id: string, attempt: Attempt, outcome?: string): void {
  const { transactions } = attempt;
  const all = (key: 'delivered' | 'failed' | 'deferred') => transactions.flatMap((t) => t[key]);
  const delivered = all('delivered');
  const failed = all('failed');
  const deferred = all('deferred');
  const reasons = transactions.flatMap((t) => (t.reason && (t.failed.length || t.deferred.length) ? [t.reason] : []));
  log[deferred.length || failed.length ? 'warn' : 'info'](
    {
      msg_id: id,
      route: transactions.map((t) => t.route).join(', '),
      delivered,
      failed,
      deferred,
      ...(reasons.length ? { reason: reasons.join('; ') } : {}),
      attempts: attempt.entry.attempts,
      ...(outcome ? { left_queue: outcome } : {}),
    },
    'delivery attempt',
  );
}

async function sendGroup(
  deps: AttemptDeps,
  route: Route,
  entry: QueueEntry,
  meta: MessageMeta,
  recipients: QueueRecipient[],
  stored: Buffer | undefined,
): Promise<GroupOutcome> {
  let raw: Readable | Buffer | undefined;
  try {
    // A small message is read whole first: the SMTP client writes a buffer in far fewer steps than it pipes a stream.
    raw = stored
      ? Buffer.concat([traceBuffer(deps, meta, recipients), stored])
      : meta.size <= WHOLE_MESSAGE_MAX
        ? await wholeMessage(deps, entry, meta, recipients)
        : Readable.from(withHeaders(deps, entry, meta, recipients));
    const sent = await deps.transports.send(route, { from: entry.mailFrom, to: recipients.map((r) => r.address) }, raw);
    return { route, sent };
  } catch (err) {
    if (raw instanceof Readable) raw.destroy();
    return { route, ...classify(err, route) };
  }
}

/** Turns a nodemailer error into what it means for the recipients of the transaction. */
function classify(err: unknown, route: Route): Omit<GroupOutcome, 'route'> {
  const e = err as {
    code?: string;
    responseCode?: number;
    response?: string;
    message?: string;
    command?: string;
    rejectedErrors?: { recipient?: string; responseCode?: number; response?: string; message: string }[];
  };
  const at = new Date().toISOString();
  const text = oneLine(e.response ?? e.message ?? String(err), MAX_REPLY_TEXT);
  if (e.code === 'EAUTH') {
    return {
      authFailed: true,
      failure: { at, ...(e.responseCode ? { code: e.responseCode } : {}), message: `authentication failed at ${route.name}: ${text}`, permanent: false },
    };
  }
  if (e.rejectedErrors?.length && e.command === 'RCPT TO') {
    // Every recipient refused: each keeps its own reply (some may be 4xx, some 5xx).
    return {
      sent: {
        accepted: [],
        rejected: e.rejectedErrors.map((r) => ({
          address: r.recipient ?? '',
          ...(r.responseCode ? { code: r.responseCode } : {}),
          message: oneLine(r.response ?? r.message, MAX_REPLY_TEXT),
        })),
        response: text,
      },
    };
  }
  const code = e.responseCode;
  const permanent = code !== undefined && code >= 500 && code < 600;
  const what = code !== undefined ? `${e.command ?? 'the server'} refused: ${text}` : `${route.name}: ${text}`;
  return { failure: { at, ...(code ? { code } : {}), message: what, permanent } };
}

function record(outcome: GroupOutcome, recipients: QueueRecipient[], now: Date): TransactionReport {
  const at = now.toISOString();
  const accepted = new Set(outcome.sent?.accepted.map((a) => a.toLowerCase()));
  const refused = new Map(outcome.sent?.rejected.map((r) => [r.address.toLowerCase(), r]));
  for (const r of recipients) {
    r.attempts += 1;
    const key = r.address.toLowerCase();
    const refusal = refused.get(key);
    let last: DeliveryResult;
    if (outcome.failure) last = outcome.failure;
    else if (accepted.has(key)) {
      r.status = 'delivered';
      r.deliveredAt = at;
      r.route = outcome.route.name;
      last = { at, code: 250, message: oneLine(outcome.sent?.response ?? '', MAX_REPLY_TEXT), permanent: false };
    } else {
      // Refused, or (should not happen) neither: a temporary failure that the next attempt settles.
      const code = refusal?.code;
      last = {
        at,
        ...(code ? { code } : {}),
        message: refusal?.message ?? 'the server gave no reply for this recipient',
        permanent: code !== undefined && code >= 500,
      };
    }
    if (r.status === 'pending' && last.permanent) r.status = 'failed';
    r.last = last;
  }
  const delivered = recipients.filter((r) => r.status === 'delivered').map((r) => r.address);
  const failed = recipients.filter((r) => r.status === 'failed').map((r) => r.address);
  const deferred = recipients.filter((r) => r.status === 'pending').map((r) => r.address);
  const reason = outcome.failure?.message ?? recipients.find((r) => r.status !== 'delivered')?.last?.message;
  return { route: outcome.route.name, delivered, failed, deferred, ...(reason ? { reason } : {}) };
}

/** The stored bytes with our trace headers in front, as one buffer. */
async function wholeMessage(deps: AttemptDeps, entry: QueueEntry, meta: MessageMeta, recipients: QueueRecipient[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of withHeaders(deps, entry, meta, recipients)) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The stored bytes, with our trace headers in front (trace.ts). */
async function* withHeaders(deps: AttemptDeps, entry: QueueEntry, meta: MessageMeta, recipients: QueueRecipient[]): AsyncGenerator<Buffer> {
  yield traceBuffer(deps, meta, recipients);
  yield* deps.store.openRaw(entry.id) as AsyncIterable<Buffer>;
}

/** Our trace headers (trace.ts) for this group of recipients. */
function traceBuffer(deps: AttemptDeps, meta: MessageMeta, recipients: QueueRecipient[]): Buffer {
  // A group shares its route (attemptDelivery): a [[relay]] name means our own downstream. A
  // trusted client's mail for another domain is a relay entry too, but has none: it leaves
  // through the default SMTP to someone else's server.
  const ourDownstream = recipients[0]?.relay !== undefined;
  return Buffer.from(
    traceHeaders(
      deps.config.smtp.hostname,
      meta,
      recipients.map((r) => r.address),
      { ourDownstream },
    ),
    'utf8',
  );
}
