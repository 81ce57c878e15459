/**
 * The reply-threading and auto-reply keys of `mailgate.toml` (issue 14): the partition's
 * reference format, what happens to fetched mail written to an address no alias has, how often
 * one sender is answered, and `[alias.auto_reply]`. Kept apart from schema.ts so that file
 * only gains a line per key; the same conventions apply (messages say what was expected).
 */
import { z } from 'zod';
import { age, is, text } from './fields.js';

/** Placeholders the alias acknowledgement may use. */
export const AUTO_REPLY_FIELDS = ['subject', 'from', 'reference'] as const;
/** Placeholders the unknown-recipient reply may use: those, and the address written to and the ones that work. */
export const UNKNOWN_RECIPIENT_FIELDS = [...AUTO_REPLY_FIELDS, 'to', 'addresses'] as const;

/** A template: text with `{name}` placeholders from FIELDS only (a typo is a config error, not a literal in a customer's mailbox). */
function template(fields: readonly string[]) {
  const expected = `a text whose placeholders are among ${fields.map((f) => `{${f}}`).join(', ')}`;
  return z.string(is(expected)).refine((t) => [...t.matchAll(/\{([^{}]*)\}/g)].every((m) => fields.includes(m[1]!)), is(expected));
}

/** `[alias.auto_reply]` and `[partition.unknown_recipient_reply]`: the answer's subject and text, optionally HTML. */
function replyTemplates(fields: readonly string[]) {
  return z.strictObject({
    /** Subject of the answer. */
    subject: template(fields).pipe(text),
    /** Plain-text body of the answer. */
    text: template(fields).pipe(text),
    /** HTML body, sent beside the text when given (values put into it are HTML-escaped). */
    html: template(fields).optional(),
  });
}

/** `[alias.auto_reply]`: the acknowledgement the alias sends each sender (Cisco workflows' auto-responses). */
export const aliasAutoReply = replyTemplates(AUTO_REPLY_FIELDS);

/** The `[partition]` keys of reply threading and auto-replies, spread into its table. */
export const partitionThreadingKeys = {
  /** How a conversation's reference is written into subjects; `{ref}` is the 6-character token (Enate "Inbound Email"). */
  reference_format: z
    .string(is('a text with {ref} in it once, such as "[ref:{ref}]"'))
    .refine((f) => f.split('{ref}').length === 2 && f.trim() === f && f.length <= 40, is('a text with {ref} in it once, such as "[ref:{ref}]"'))
    .default('[ref:{ref}]'),
  /** Fetched mail whose To/Cc names no alias of its mailbox: "file" it under the first alias, "auto_reply" (tag and answer) or "quarantine" (tag it for quarantine forwarding) (Enate "Inbound Email"). */
  unknown_recipient: z.enum(['file', 'auto_reply', 'quarantine']).default('file'),
  /** The answer to mail for an unknown address, instead of the built-in text. */
  unknown_recipient_reply: replyTemplates(UNKNOWN_RECIPIENT_FIELDS).optional(),
  /** At most one auto-reply per sender address per alias within this age (RFC 3834 section 2). */
  auto_reply_interval: age('"30m", "12h", "1d" or "2w"').default(86_400_000),
};

/** `[alias.auto_reply]` as loaded. */
export type AutoReplyTemplates = z.output<typeof aliasAutoReply>;
