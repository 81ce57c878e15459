/**
 * The message that takes a quarantined message to the quarantine mailbox (PCEmail: the bad
 * email is forwarded "to another mailbox where it can be manually processed by an agent"): a
 * new message from the quarantine sender with the reason in its subject and text, and the
 * original attached byte for byte. Streamed from a reopenable source: the original is read
 * twice (once to see how it can travel, once to attach it), never held in memory.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import libmime from 'libmime';
import { base64Lines } from '../../policy/wrapping/wrapping-message.js';
import { oneLine, rfc5322Date } from '../../lib/text.js';

export interface ForwardingMessageOptions {
  from: string;
  to: string;
  /** Short reason, for the subject. */
  reason: string;
  /** Sentences for the text. */
  details: readonly string[];
  /** The original's subject, decoded (absent when it has none). */
  originalSubject: string | undefined;
  /** The original's stored id, for the agent to find it in mailgate. */
  originalId: string;
  /** Message-ID of the forwarding message, without `<>`. */
  messageId: string;
  /** Opens the bytes to attach, from the first. */
  original: () => AsyncIterable<Buffer>;
  date?: Date;
}

const CRLF = '\r\n';
/** RFC 5322 2.1.1: a line is at most 998 characters before its CRLF. */
const MAX_LINE = 998;

/** The forwarding message, CRLF line ends throughout. */
export async function* forwardingMessage(opts: ForwardingMessageOptions): AsyncGenerator<Buffer> {
  const travel = await howItTravels(opts.original());
  const boundary = `----=_mailgate_quarantine_${randomBytes(12).toString('hex')}`;
  const subject = `Quarantined: ${opts.reason} — ${opts.originalSubject !== undefined ? oneLine(opts.originalSubject, 200) : '(no subject)'}`;
  const text = [
    `mailgate forwarded this message to the quarantine mailbox: ${opts.reason}.`,
    ...opts.details,
    `Its id in mailgate is ${opts.originalId} (mailgate messages show ${opts.originalId}).`,
    travel === 'rfc822'
      ? 'The message is attached as it was stored, byte for byte.'
      : // RFC 2046 5.2.1: message/rfc822 allows only 7bit, 8bit or binary, which cannot carry these bytes over SMTP.
        'The message is attached byte for byte as original-message.eml (base64): its bytes (a NUL, a bare CR or LF, or an overlong line) cannot travel as an attached message.',
  ];
  const header = [
    `From: ${opts.from}`,
    `To: ${opts.to}`,
    `Subject: ${libmime.encodeWords(subject, 'Q', 52)}`,
    `Date: ${rfc5322Date(opts.date ?? new Date())}`,
    `Message-ID: <${opts.messageId}>`,
    // RFC 3834 5: made by a program, so the quarantine mailbox's own responders leave it alone.
    'Auto-Submitted: auto-generated',
    `X-Mailgate-Quarantined: ${opts.originalId}`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: base64',
    '',
  ];
  yield Buffer.from(header.join(CRLF) + CRLF, 'utf8');
  yield* base64Lines(Readable.from([Buffer.from(text.join(CRLF) + CRLF, 'utf8')]));
  yield Buffer.from(`--${boundary}${CRLF}`, 'latin1');
  if (travel === 'rfc822') {
    yield Buffer.from(['Content-Type: message/rfc822', 'Content-Disposition: attachment; filename="original-message.eml"', '', ''].join(CRLF), 'latin1');
    yield* opts.original();
    // The line end in front of the boundary belongs to the boundary (RFC 2046 5.1.1): the attached bytes stay exactly the original's.
    yield Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'latin1');
  } else {
    yield Buffer.from(
      [
        'Content-Type: application/octet-stream; name="original-message.eml"',
        'Content-Disposition: attachment; filename="original-message.eml"',
        'Content-Transfer-Encoding: base64',
        '',
        '',
      ].join(CRLF),
      'latin1',
    );
    yield* base64Lines(opts.original());
    yield Buffer.from(`--${boundary}--${CRLF}`, 'latin1');
  }
}

/**
 * `rfc822` when the bytes can travel as an attached message over any SMTP hop (every line ends
 * in CRLF, none is over 998 characters, no NUL; RFC 5321 2.3.8 and 4.5.3.1.6), else `base64`.
 */
async function howItTravels(bytes: AsyncIterable<Buffer>): Promise<'rfc822' | 'base64'> {
  let line = 0;
  let afterCr = false;
  for await (const chunk of bytes) {
    for (const b of chunk) {
      if (afterCr) {
        if (b !== 0x0a) return 'base64';
        afterCr = false;
        line = 0;
        continue;
      }
      if (b === 0x0d) afterCr = true;
      else if (b === 0x0a || b === 0x00 || ++line > MAX_LINE) return 'base64';
    }
  }
  // A last line without its CRLF gets the boundary's line end in front of the boundary, which a reader takes off again.
  return afterCr ? 'base64' : 'rfc822';
}
