/**
 * Auto-replies (Enate "Inbound Email": the answer to mail for an unconfigured address; Cisco
 * workflows' auto-responses: `[alias.auto_reply]`). They follow RFC 3834: sent from the alias,
 * through its own outgoing route (the durable queue, as any mail the alias sends), marked
 * `Auto-Submitted: auto-replied`, naming the original in In-Reply-To and References; never to
 * the null sender, machine mail, a mailing list or a delivery exception; and at most one per
 * sender per alias per `[partition] auto_reply_interval`, remembered in the store.
 *
 * An auto-reply is advice to a customer, never part of storing their message: whatever fails
 * here is logged, and the original stays stored.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import type { AliasConfig, Config } from '../config/schema.js';
import type { MessageMeta } from '../../storage/records.js';
import { submitOutbound, type SubmitDeps } from '../dispatch/submit.js';
import { aliasAddresses, aliasOfAddress } from '../config/alias-addresses.js';
import { EXCEPTION_QUEUE_TAG } from '../../policy/delivery-exceptions/stage.js';
import { ReferenceFormat, THREADING, type ThreadingFindings } from '../../policy/threading/stage.js';
import { UNKNOWN_RECIPIENT_REPLY, fillTemplates } from './templates.js';

export { RESOLVED_TAG, UNKNOWN_RECIPIENT_TAG } from './tags.js';

/** Mail for an address no alias has: what it was written to, and what would have worked. */
export interface UnknownRecipient {
  /** Its To and Cc addresses. */
  written: readonly string[];
  /** The addresses of the mailbox's aliases. */
  working: readonly string[];
}

/** What became of a possible auto-reply: the id of the answer queued, or why none was sent. */
export type AutoReplyOutcome = { sent: string; to: string } | { skipped: string };

/**
 * Answers META, stored for ALIAS, when the alias (or, with UNKNOWN, the partition) has an
 * auto-reply and RFC 3834 allows one. Never rejects.
 */
export async function autoReply(deps: SubmitDeps, meta: MessageMeta, alias: AliasConfig, unknown?: UnknownRecipient): Promise<AutoReplyOutcome> {
  const log = deps.logger.child({ msg_id: meta.id, alias: alias.name });
  try {
    const outcome = await answer(deps, meta, alias, unknown);
    if ('sent' in outcome) log.info({ reply_id: outcome.sent, to: outcome.to }, 'auto-reply queued');
    else if (outcome.skipped !== 'no auto-reply configured') log.info({ reason: outcome.skipped }, 'no auto-reply sent');
    return outcome;
  } catch (err) {
    log.warn({ err }, 'could not send an auto-reply; the message is stored');
    return { skipped: `failed: ${(err as Error).message}` };
  }
}

async function answer(deps: SubmitDeps, meta: MessageMeta, alias: AliasConfig, unknown?: UnknownRecipient): Promise<AutoReplyOutcome> {
  const { partition } = deps.config;
  const templates = unknown ? (partition.unknown_recipient_reply ?? UNKNOWN_RECIPIENT_REPLY) : alias.auto_reply;
  if (!templates) return { skipped: 'no auto-reply configured' };
  const threading = meta.findings[THREADING] as ThreadingFindings | undefined;
  const refusal = whyNot(meta, threading, alias, deps.config);
  if (refusal) return { skipped: refusal };
  const to = threading!.replyTo!;
  const now = new Date();
  // RFC 3834 section 2: not more than once per period per sender; the claim is the record.
  if (!(await deps.store.claimAutoReply(alias.name, to, now, new Date(now.getTime() - partition.auto_reply_interval)))) {
    return { skipped: `${to} was answered within auto_reply_interval` };
  }
  const format = new ReferenceFormat(partition.reference_format);
  const reference = format.write(threading!.conversation);
  const filled = fillTemplates(templates, {
    subject: meta.subject ?? '',
    from: meta.from ?? to,
    reference,
    ...(unknown ? { to: unknown.written.join(', '), addresses: unknown.working.join('\n') } : {}),
  });
  const original = meta.messageId ? `<${meta.messageId}>` : undefined;
  const mail: MailComposer.Options = {
    from: alias.address,
    to,
    // The original's reference, so the answer is in its conversation even when the original had no Message-ID.
    subject: format.subjectWith(filled.subject, threading!.conversation),
    text: filled.text,
    ...(filled.html !== undefined ? { html: filled.html } : {}),
    ...(original ? { inReplyTo: original, references: original } : {}),
    // RFC 3834 section 5.1; X-Auto-Response-Suppress asks Exchange not to answer the answer.
    headers: { 'Auto-Submitted': 'auto-replied', 'X-Auto-Response-Suppress': 'All' },
    disableUrlAccess: true,
    disableFileAccess: true,
    newline: 'win',
  };
  // The envelope sender is the alias (not the null sender RFC 3834 section 3.3 allows): an
  // authenticated upstream may refuse <>, and a bounce of the answer is a delivery exception, never answered.
  const { meta: sent } = await submitOutbound(deps, new MailComposer(mail).compile().createReadStream(), {
    alias,
    envelope: { mailFrom: alias.address, rcptTo: [to] },
    source: { kind: 'auto-reply', alias: alias.name },
  });
  return { sent: sent.id, to };
}

/** Why RFC 3834 (or sense) forbids answering META, or undefined when an answer may go. */
function whyNot(meta: MessageMeta, threading: ThreadingFindings | undefined, alias: AliasConfig, config: Config): string | undefined {
  if (meta.direction === 'outbound' || meta.source.kind === 'auto-reply' || meta.source.kind === 'dsn') return 'mail we sent is not answered';
  if (meta.tags.includes(EXCEPTION_QUEUE_TAG)) return 'a delivery exception (bounce or auto-reply) is not answered';
  if (meta.tags.includes('wrapped') || meta.tags.includes('oversize')) return 'the message could not be read whole';
  if (!threading) return 'the message was not read for a sender';
  if (threading.noAutoReply) return `machine or list mail: ${threading.noAutoReply}`;
  const to = threading.replyTo;
  if (!to) return 'no sender address to answer';
  // Never to ourselves: two aliases answering each other would loop.
  if (aliasAddresses(alias).includes(to.toLowerCase()) || aliasOfAddress(config, to)) return 'the sender is one of our aliases';
  return undefined;
}
