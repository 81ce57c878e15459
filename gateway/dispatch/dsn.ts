/**
 * Delivery status notifications (RFC 3464): the `multipart/report` a dispatcher sends back to
 * the envelope sender when delivery failed, is delayed or (on request) succeeded. Three parts:
 * a text an ordinary sender can read, the machine-readable `message/delivery-status`, and the
 * original's header block as `text/rfc822-headers` (RFC 6522), never its body.
 *
 * The whole notification is 7-bit clean, so it can leave through any relay: the text part is
 * quoted-printable, the status part escapes non-ASCII as RFC 6533 `\x{HEX}`, the header copy
 * is quoted-printable whenever it holds 8-bit bytes or overlong lines. The one exception is a
 * non-ASCII envelope sender in `To:`, which has no 7-bit form (RFC 6532).
 *
 * The notification must be sent with a null envelope sender (`MAIL FROM:<>`, RFC 3464 2 and
 * RFC 5321 4.5.5), so a bounce of it is never answered; that is the caller's part.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { domainToASCII } from 'node:url';
import libmime from 'libmime';
import { encode as qpEncode, wrap as qpWrap } from 'nodemailer/lib/qp';
import { oneLine, rfc5322Date } from '../../lib/text.js';

/** One recipient the notification reports on. */
export interface DsnRecipient {
  /** The original envelope recipient (RCPT TO). */
  address: string;
  /** What happened: given up, still retrying, or delivered (NOTIFY=SUCCESS). */
  status: 'failed' | 'delayed' | 'delivered';
  /** SMTP reply code from the remote server, e.g. 550; 200 to 599. */
  code?: number;
  /** The remote server's reply text, or our error in words. */
  message: string;
  /** Host name of the server that replied, if any. */
  remoteMta?: string;
  /** ISO time of the last delivery attempt. */
  lastAttemptAt?: string;
}

/** What {@link deliveryStatusNotification} needs. */
export interface DsnOptions {
  /** Our host name (`Reporting-MTA: dns; NAME`). */
  reportingMta: string;
  /** Sender address of the notification, e.g. `MAILER-DAEMON@host`. */
  from: string;
  /** The original envelope sender, who gets the notification; never empty (no DSN for `<>`). */
  to: string;
  /** Message-ID of the original, without `<>`; goes in In-Reply-To and References. */
  originalMessageId?: string;
  /** Our queue/message id of the original; goes in `X-Mailgate-Original-Id`. */
  originalEnvelopeId?: string;
  /** The sender's ENVID from `MAIL FROM` (RFC 3461 4.4), when one was given: `Original-Envelope-Id`. */
  envelopeId?: string;
  /** ISO time the original was received. */
  arrivalDate: string;
  /** The recipients to report on; at least one. */
  recipients: DsnRecipient[];
  /**
   * A fresh stream of the original message's bytes. Only its header block is read (at most
   * 64 KiB), then the stream is destroyed.
   */
  originalHeaders: () => Readable;
  /** Date of the notification; defaults to now. */
  date?: Date | undefined;
  /** Message-ID of the notification, with or without `<>`; defaults to `<random@reportingMta>`. */
  messageId?: string | undefined;
}

/** Most bytes of the original's header block that are copied (and read). */
export const ORIGINAL_HEADER_CAP = 64 * 1024;
const CRLF = '\r\n';
// A reply longer than this is someone's stack trace, not a reply; RFC 5321 4.5.3.1.5 caps a reply line at 512.
const MAX_REPLY_CHARS = 2000;
// RFC 5322 2.1.1: lines of at most 78 characters where possible, never more than 998.
const FOLD_AT = 78;
const MAX_WORD = 900;

const SUBJECTS = {
  failed: 'Undelivered Mail Returned to Sender',
  delayed: 'Delayed Mail (still being retried)',
  delivered: 'Successful Mail Delivery Report',
} as const;

/** Builds the DSN as a stream of bytes, CRLF line endings, ready to be ingested as a new message. */
export function deliveryStatusNotification(opts: DsnOptions): Readable {
  checkOptions(opts);
  const boundary = `mailgate-dsn-${randomBytes(12).toString('hex')}`;
  const reportingMta = mtaName(opts.reportingMta);
  const messageId = ownMessageId(opts.messageId, reportingMta);

  async function* bytes(): AsyncGenerator<Buffer> {
    // Read first: a missing original fails the stream before any byte of the DSN is out.
    const original = await originalHeaderBlock(opts.originalHeaders(), ORIGINAL_HEADER_CAP);
    yield Buffer.from(topHeaders(opts, messageId, boundary).join(CRLF) + CRLF + CRLF, 'utf8');
    yield Buffer.from(
      [
        'This is a delivery status notification in MIME format (RFC 3464).',
        '',
        `--${boundary}`,
        'Content-Description: Notification',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: quoted-printable',
        '',
        qpWrap(qpEncode(explanation(opts, reportingMta, originalSubject(original)).join(CRLF) + CRLF), 76),
        `--${boundary}`,
        'Content-Description: Delivery report',
        'Content-Type: message/delivery-status',
        '',
        deliveryStatus(opts, reportingMta),
        `--${boundary}`,
        'Content-Description: Undelivered Message Headers',
        'Content-Type: text/rfc822-headers',
        ...headerCopy(original),
        `--${boundary}--`,
        '',
      ].join(CRLF),
      'utf8',
    );
  }
  return Readable.from(bytes(), { objectMode: false });
}

function ownMessageId(given: string | undefined, reportingMta: string): string {
  if (given === undefined) return `${randomBytes(12).toString('hex')}@${reportingMta}`;
  const bare = bareId(given);
  if (!bare) throw new TypeError(`messageId is not a usable Message-ID: ${given}`);
  return bare;
}

function checkOptions(opts: DsnOptions): void {
  if (!opts.recipients.length) throw new TypeError('a delivery status notification needs at least one recipient');
  // RFC 5321 4.5.5 / RFC 3461 6.2: a message with a null sender is never answered with a DSN.
  if (!oneLine(opts.to)) throw new TypeError('a delivery status notification is never sent to a null sender');
  if (!oneLine(opts.from) || !oneLine(opts.reportingMta)) throw new TypeError('from and reportingMta are required');
  parseDate('arrivalDate', opts.arrivalDate);
  for (const r of opts.recipients) {
    if (!oneLine(r.address)) throw new TypeError('a recipient address is empty');
    if (r.code !== undefined && !(Number.isInteger(r.code) && r.code >= 200 && r.code <= 599)) {
      throw new TypeError(`SMTP reply code of <${r.address}> is not 200 to 599: ${r.code}`);
    }
    if (r.lastAttemptAt !== undefined) parseDate('lastAttemptAt', r.lastAttemptAt);
  }
}

function topHeaders(opts: DsnOptions, messageId: string, boundary: string): string[] {
  const lines = [
    `From: Mail Delivery System <${oneLine(opts.from)}>`,
    `To: <${oneLine(opts.to)}>`,
    `Subject: ${SUBJECTS[worstAction(opts.recipients)]}`,
    `Date: ${rfc5322Date(opts.date ?? new Date())}`,
    `Message-ID: <${messageId}>`,
  ];
  const original = opts.originalMessageId ? bareId(opts.originalMessageId) : undefined;
  if (original) lines.push(`In-Reply-To: <${original}>`, `References: <${original}>`);
  // RFC 3834 5: an autoresponder must not answer this, so a DSN can never start a loop.
  lines.push('Auto-Submitted: auto-replied');
  const queueId = opts.originalEnvelopeId ? asciiEscaped(oneLine(opts.originalEnvelopeId)).slice(0, MAX_WORD) : '';
  if (queueId) lines.push(`X-Mailgate-Original-Id: ${queueId}`);
  lines.push('MIME-Version: 1.0', `Content-Type: multipart/report; report-type=delivery-status;${CRLF} boundary="${boundary}"`);
  return lines;
}

/** The subject follows the worst news: one failure makes it a bounce. */
function worstAction(recipients: DsnRecipient[]): DsnRecipient['status'] {
  if (recipients.some((r) => r.status === 'failed')) return 'failed';
  return recipients.some((r) => r.status === 'delayed') ? 'delayed' : 'delivered';
}

/** The text part: what happened to which address and what the other server said, in plain words. */
function explanation(opts: DsnOptions, reportingMta: string, subject: string | undefined): string[] {
  const action = worstAction(opts.recipients);
  const lines = [`This is the mail system at ${reportingMta}.`, ''];
  if (action === 'failed') {
    lines.push('Your message could not be delivered to one or more of its recipients.', 'It will not be tried again for the addresses marked as failed below.');
  } else if (action === 'delayed') {
    lines.push(
      'Your message has not been delivered yet to one or more of its recipients.',
      'We are still trying: you do not need to send it again. You will hear',
      'from us again if we have to give up.',
    );
  } else {
    lines.push('Your message was delivered to the recipients below, as you asked.');
  }
  lines.push('');
  if (subject) lines.push(`  Subject: ${subject}`);
  lines.push(`  Received by us: ${rfc5322Date(parseDate('arrivalDate', opts.arrivalDate))}`, '');
  const headings = { failed: 'Failed, will not be retried:', delayed: 'Delayed, still being retried:', delivered: 'Delivered:' } as const;
  for (const status of ['failed', 'delayed', 'delivered'] as const) {
    const group = opts.recipients.filter((r) => r.status === status);
    if (!group.length) continue;
    lines.push(headings[status], '');
    for (const r of group) {
      lines.push(`  <${oneLine(r.address)}>`);
      const reply = replyText(r);
      if (r.code !== undefined) lines.push(`    The receiving server${r.remoteMta ? ` ${oneLine(r.remoteMta)}` : ''} replied:`, `    ${reply}`);
      else if (reply) lines.push(`    ${status === 'delivered' ? 'Note' : 'Reason'}: ${reply}`);
      lines.push('');
    }
  }
  lines.push('If you need help, forward this message to your mail administrator; the', 'technical report attached to it says what happened in detail.');
  return lines;
}

/** The `message/delivery-status` body (RFC 3464 2.1): per-message fields, then a block per recipient. */
function deliveryStatus(opts: DsnOptions, reportingMta: string): string {
  const blocks: string[][] = [];
  const perMessage = [`Reporting-MTA: dns; ${reportingMta}`];
  const envid = opts.envelopeId ? asciiEscaped(oneLine(opts.envelopeId)).slice(0, MAX_WORD) : '';
  if (envid) perMessage.push(`Original-Envelope-Id: ${envid}`);
  perMessage.push(`Arrival-Date: ${rfc5322Date(parseDate('arrivalDate', opts.arrivalDate))}`);
  blocks.push(perMessage);
  for (const r of opts.recipients) {
    const fields = [`Final-Recipient: ${finalRecipient(oneLine(r.address))}`, `Action: ${r.status}`, `Status: ${statusCode(r)}`];
    if (r.remoteMta && oneLine(r.remoteMta)) fields.push(`Remote-MTA: dns; ${mtaName(r.remoteMta)}`);
    const reply = asciiEscaped(replyText(r));
    // RFC 3464 2.3.6: "smtp" only for an SMTP reply; our own errors get an X- type, as Postfix's X-Postfix.
    if (r.code !== undefined) fields.push(folded('Diagnostic-Code', `smtp; ${reply}`));
    else if (reply) fields.push(folded('Diagnostic-Code', `X-Mailgate; ${reply}`));
    if (r.lastAttemptAt) fields.push(`Last-Attempt-Date: ${rfc5322Date(parseDate('lastAttemptAt', r.lastAttemptAt))}`);
    blocks.push(fields);
  }
  return blocks.map((b) => b.join(CRLF) + CRLF).join(CRLF);
}

// An RFC 3463 enhanced code at the start of the reply text, after the basic code if repeated there.
const ENHANCED = /^(?:\d{3}[ -])?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])/;
const ACTION_CLASS = { failed: '5', delayed: '4', delivered: '2' } as const;

/** RFC 3464 2.3.4 Status: the class of the reply code (or of the action), detail from the text when it agrees. */
export function statusCode(r: Pick<DsnRecipient, 'status' | 'code' | 'message'>): string {
  const codeClass = r.code === undefined ? undefined : String(Math.floor(r.code / 100));
  const cls = codeClass === '2' || codeClass === '4' || codeClass === '5' ? codeClass : ACTION_CLASS[r.status];
  const enhanced = ENHANCED.exec(oneLine(r.message));
  return enhanced && enhanced[1] === cls ? `${cls}.${enhanced[2]}.${enhanced[3]}` : `${cls}.0.0`;
}

/** The reply on one line, led by its code unless the server already repeated it. */
function replyText(r: DsnRecipient): string {
  let text = oneLine(r.message);
  if (text.length > MAX_REPLY_CHARS) text = `${text.slice(0, MAX_REPLY_CHARS)}...`;
  if (r.code === undefined || new RegExp(`^${r.code}(?:[ -]|$)`).test(text)) return text;
  return text ? `${r.code} ${text}` : String(r.code);
}

/** RFC 3464 2.3.2; a non-ASCII address takes RFC 6533's `utf-8` type in its 7-bit xtext form. */
function finalRecipient(address: string): string {
  if (/^[\x21-\x7e]+$/.test(address)) return `rfc822; ${address}`;
  // RFC 6533 3: QCHAR is printable ASCII but for "+", "=" and "\"; all else is \x{HEX}.
  return `utf-8; ${asciiEscaped(address, /[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]/)}`;
}

/** Non-ASCII (and whatever `keep` refuses) as RFC 6533 `\x{HEX}`, so status fields stay 7-bit. */
function asciiEscaped(text: string, keep = /[\x20-\x7e]/): string {
  let out = '';
  for (const ch of text) out += keep.test(ch) ? ch : `\\x{${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(2, '0')}}`;
  return out;
}

/** `Name: value` folded at spaces (RFC 5322 2.2.3); a run of over 900 characters is split so no line passes 998. */
function folded(name: string, value: string): string {
  const lines: string[] = [];
  let line = `${name}:`;
  let words = 0;
  for (const word of value.split(' ')) {
    for (let i = 0; i < word.length || i === 0; i += MAX_WORD) {
      const piece = word.slice(i, i + MAX_WORD);
      if (words > 0 && line.length + 1 + piece.length > FOLD_AT) {
        lines.push(line);
        line = '';
      }
      line += ` ${piece}`;
      words++;
    }
  }
  lines.push(line);
  return lines.join(CRLF);
}

/** A Message-ID without `<>`, or undefined when it would not make a 7-bit header line. */
function bareId(id: string): string | undefined {
  const bare = id.trim().replace(/^<(.*)>$/, '$1');
  return /^[\x21-\x3b\x3d\x3f-\x7e]{1,900}$/.test(bare) ? bare : undefined;
}

/** A host name for `dns;` fields: as given when printable ASCII, else its A-label form. */
function mtaName(name: string): string {
  const clean = oneLine(name);
  if (/^[\x21-\x7e]+$/.test(clean)) return clean.slice(0, MAX_WORD);
  return domainToASCII(clean) || asciiEscaped(clean).replace(/ /g, '').slice(0, MAX_WORD);
}

function parseDate(name: string, iso: string): Date {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) throw new TypeError(`${name} is not a valid date: ${iso}`);
  return date;
}

/**
 * The header block at the start of `input`, without the empty line that ends it (all of the
 * input when it has none). A block over `cap` bytes is cut after its last complete line within
 * the cap. Reads no further than needed, then destroys the stream.
 */
async function originalHeaderBlock(input: Readable, cap: number): Promise<Buffer> {
  // One buffer of the cap, filled in place: linear however small the source's chunks are.
  const held = Buffer.alloc(cap);
  let length = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer | string>) {
      const from = Math.max(0, length - 2);
      length += (Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)).copy(held, length);
      const end = blankLine(held.subarray(0, length), from);
      if (end >= 0) return held.subarray(0, end);
      if (length >= cap) return held.subarray(0, held.lastIndexOf(0x0a) + 1);
    }
    return held.subarray(0, length);
  } finally {
    input.destroy();
  }
}

/** Offset where the empty line ending a header block starts (after the last header's LF), or -1. */
function blankLine(buf: Buffer, from: number): number {
  for (let i = from; i < buf.length; i++) {
    const lineStart = i === 0 || buf[i - 1] === 0x0a;
    if (lineStart && (buf[i] === 0x0a || (buf[i] === 0x0d && buf[i + 1] === 0x0a))) return i;
  }
  return -1;
}

/** The third part's transfer encoding header, the empty line, and the header block ending in CRLF. */
function headerCopy(block: Buffer): string[] {
  // Bytes as received but with CRLF line ends; a bare CR is not a line end in a message (RFC 5322 2.2).
  let text = block.toString('latin1').replace(/\r?\n/g, '\n').replace(/\r/g, '').replace(/\n/g, CRLF);
  if (text && !text.endsWith(CRLF)) text += CRLF;
  const sevenBit = !/[^\x01-\x7f]/.test(text) && text.split(CRLF).every((line) => line.length <= 998);
  if (sevenBit) return ['Content-Transfer-Encoding: 7bit', '', text];
  // The same bytes, kept 7-bit and within line limits for any relay (RFC 2045 6.7).
  return ['Content-Transfer-Encoding: quoted-printable', '', qpWrap(qpEncode(Buffer.from(text, 'latin1')), 76)];
}

/** The original's Subject, decoded, for the text part; undefined when it has none. */
function originalSubject(block: Buffer): string | undefined {
  const unfolded = block.toString('latin1').replace(/\r?\n(?=[ \t])/g, '');
  const raw = /^subject:[ \t]*(.*)$/im.exec(unfolded)?.[1];
  if (raw === undefined) return undefined;
  // RFC 6532 allows raw UTF-8 in headers; encoded words (RFC 2047) are decoded by libmime.
  const subject = oneLine(libmime.decodeWords(Buffer.from(raw, 'latin1').toString('utf8')));
  return subject.length > 200 ? `${subject.slice(0, 200)}...` : subject || undefined;
}
