/**
 * The text of an auto-reply: an alias's `[alias.auto_reply]` acknowledgement, or the answer to
 * mail written to an address no alias has (Enate "Inbound Email": "an automated reply ...
 * informing the user that they have emailed an incorrect address"), built in or the
 * partition's `[partition.unknown_recipient_reply]`. Placeholders are checked when the config
 * loads (gateway/config/threading.ts); here they are filled.
 */
import type { AutoReplyTemplates } from '../config/threading.js';

/** The values a template may use. */
export interface ReplyValues {
  /** The original's subject. */
  subject: string;
  /** The original's sender, as its From header reads. */
  from: string;
  /** The conversation's reference as written into subjects, e.g. `[ref:K7P2QX]`. */
  reference: string;
  /** Unknown recipient: the addresses written to. */
  to?: string;
  /** Unknown recipient: the addresses that do receive mail, one per line in text. */
  addresses?: string;
}

/** The built-in answer to mail for an unknown address. */
export const UNKNOWN_RECIPIENT_REPLY: AutoReplyTemplates = {
  subject: 'Undeliverable address: {subject}',
  text: [
    'Hello,',
    '',
    'You wrote to {to}, an address that does not receive mail here, so your message',
    '"{subject}" will not be answered from it.',
    '',
    'Please write to one of these addresses instead:',
    '{addresses}',
    '',
    'This is an automatic reply; replies to it are not read.',
  ].join('\n'),
};

/** The subject, text and HTML (when the template has one) with the placeholders filled in. */
export function fillTemplates(t: AutoReplyTemplates, values: ReplyValues): { subject: string; text: string; html?: string } {
  const fill = (template: string, escape: (v: string) => string) =>
    template.replace(/\{([a-z]+)\}/g, (whole, name: string) => {
      const value = values[name as keyof ReplyValues];
      return value === undefined ? whole : escape(value);
    });
  // A subject is one line: a value with a line break must not start a header of its own.
  const oneLine = (v: string) => v.replace(/[\r\n]+/g, ' ');
  return {
    subject: fill(t.subject, oneLine),
    text: fill(t.text, (v) => v),
    ...(t.html !== undefined ? { html: fill(t.html, escapeHtml) } : {}),
  };
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`).replace(/\n/g, '<br>');
}
