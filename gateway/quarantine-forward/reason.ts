/**
 * Which stored inbound messages go to the quarantine mailbox, and why (PCEmail "Email
 * Quarantine Settings"): what could not be processed (the quarantine test marker included),
 * auto-responses, messages whose attachment was blocked, and mail for no alias of its mailbox.
 */
import type { MessageMeta } from '../../storage/records.js';
import type { Config } from '../config/schema.js';
import type { QuarantineSettings } from './settings.js';
import { UNKNOWN_RECIPIENT_TAG } from '../auto-reply/tags.js';

/** Why a message is forwarded: a short reason for the subject, and sentences for the body. */
export interface ForwardReason {
  reason: string;
  details: string[];
}

/** The delivery-exception stage's findings key and the signals that mean "an auto-reply" (policy/delivery-exceptions/rules.ts). */
const DELIVERY_EXCEPTIONS = 'delivery_exceptions';
const AUTO_REPLY_SIGNALS = new Set(['auto_submitted', 'x_autoreply', 'x_autorespond', 'precedence']);

/** Why `meta` goes to the quarantine mailbox, or undefined when it does not. */
export function forwardReason(meta: MessageMeta, settings: QuarantineSettings, config: Config): ForwardReason | undefined {
  // Only mail that came in: what we send or made ourselves is never a "bad inbound email".
  if (meta.direction === 'outbound' || meta.source.kind === 'dsn' || meta.source.kind === 'quarantine') return undefined;
  const wrapped = meta._WrappingMessageReason;
  if (wrapped !== undefined && settings.wrapped) {
    const code = wrapped.slice(0, wrapped.indexOf(':'));
    // PCEmail: a subject with the marker "is treated as if it experienced a fatal error and is sent to quarantine".
    const reason = code === 'quarantine_test' ? 'quarantine test message' : `could not be processed (${code})`;
    return { reason, details: [`The message could not be processed and was stored as a wrapping message: ${wrapped}.`] };
  }
  const exceptions = meta.findings[DELIVERY_EXCEPTIONS];
  const decidedBy = typeof exceptions?.decidedBy === 'string' ? exceptions.decidedBy : undefined;
  if (settings.autoResponses && decidedBy !== undefined && AUTO_REPLY_SIGNALS.has(decidedBy)) {
    return { reason: 'auto-response', details: exceptions!.summary.map(String) };
  }
  const blocked = meta.attachments.filter((a) => a.blocked);
  if (settings.blockedAttachments && blocked.length > 0) {
    const names = blocked.map((a) => a.fileName).join(', ');
    return {
      reason: `blocked attachment (${names})`,
      details: [`The attachment policy blocked ${names}; the message is attached as stored, without it (it stays in mailgate's quarantine).`],
    };
  }
  if (config.partition.unknown_recipient === 'quarantine' && meta.tags.includes(UNKNOWN_RECIPIENT_TAG)) {
    return {
      reason: 'unknown recipient',
      details: [`No alias of the mailbox has the address it was written to (${[...meta.to, ...meta.cc].join(', ') || 'none'}).`],
    };
  }
  return undefined;
}
