/**
 * Trace headers on mail that leaves: our Received line (RFC 5321 section 4.4: every hop adds
 * one, so the next server can count hops and see where the message came from) and, for
 * inbound mail relayed downstream, the gateway's findings as X-Mailgate-* headers.
 * The stored bytes stay as they came: these go in front when the message is sent.
 */
import type { MessageMeta } from '../../storage/records.js';
import { rfc5322Date } from '../../lib/text.js';

/**
 * Our Received line for a message, in Postfix's form:
 * `from HELO (RDNS [IP]) by HOST (mailgate) with ESMTPSA id ID for <RCPT>; DATE`.
 * The protocol is RFC 3848's: ESMTP, with S for TLS and A for an authenticated client.
 * Fetched mail says IMAP or POP3; `mailgate send` and our own notifications name no client.
 * `for` names the recipient only when the transaction has exactly one (as Postfix does, so
 * a Bcc recipient is never shown to the others).
 */
export function receivedLine(hostname: string, meta: MessageMeta, recipients: readonly string[]): string {
  const s = meta.source;
  const fromClient = s.kind === 'smtp' || s.kind === 'submission';
  const from = fromClient ? `from ${s.helo ?? 'unknown'} (${s.clientHostname ? `${s.clientHostname} ` : ''}[${s.remoteAddress ?? 'unknown'}])\r\n\t` : '';
  const by = s.kind === 'cli' ? `by ${hostname} (mailgate, from mailgate send)` : `by ${hostname} (mailgate)`;
  const withProto = fromClient
    ? ` with ESMTP${s.secure ? 'S' : ''}${s.user ? 'A' : ''}`
    : s.kind === 'imap' || s.kind === 'pop3'
      ? ` with ${s.kind.toUpperCase()}`
      : '';
  const only = recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : '';
  return `Received: ${from}${by}${withProto} id ${meta.id}${only};\r\n\t${rfc5322Date(new Date(meta.receivedAt))}\r\n`;
}

/**
 * What goes in front of the stored bytes when a queued message is sent. `ourDownstream`: the
 * server behind a `[[relay]]` is ours, so it gets the findings; anyone else's does not.
 */
export function traceHeaders(hostname: string, meta: MessageMeta, recipients: readonly string[], opts: { ourDownstream: boolean }): string {
  let headers = receivedLine(hostname, meta, recipients);
  if (opts.ourDownstream) {
    headers += `X-Mailgate-Id: ${meta.id}\r\n`;
    if (meta.tags.length) headers += `X-Mailgate-Tags: ${meta.tags.join(', ')}\r\n`;
  }
  return headers;
}
