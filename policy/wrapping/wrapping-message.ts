/**
 * The wrapping message (Genesys seed, "Handling Unparsable E-Mails"): the original's header,
 * a short text that says what went wrong, and the original attached byte for byte. Built as a
 * stream from a reopenable source (the spool, or the file `policy test` reads), so the
 * original is never held in memory.
 *
 * The original is attached as `application/octet-stream` named `original-message.eml`, base64
 * encoded, rather than as `message/rfc822`: RFC 2046 5.2.1 allows only 7bit, 8bit or binary
 * for message/rfc822, and only base64 carries every byte of a broken message (NUL, bare CR,
 * overlong lines) through any later hop intact. It also keeps mail clients and our own stages
 * from parsing, inline, the very message that could not be parsed; an agent opens the .eml
 * in a mail client when needed.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { Headers } from '@zone-eu/mailsplit';
import addressparser from 'nodemailer/lib/addressparser';
import { defaultMimeLimits, headerCost, headerProblem, type MimeLimits } from '../mime/mime-check.js';
import { printable, unparsableReasons, type UnparsableReason } from '../mime/unparsable.js';
import { HEADER_READ_LIMIT } from '../mime/header-text.js';
import { placeholderPart } from '../attachments/stage.js';
import type { OriginalFinding } from '../attachments/original-scan.js';
import { rfc5322Date } from '../../lib/text.js';

/** What {@link wrappingMessage} needs. */
export interface WrappingMessageOptions {
  /** Why the original is wrapped. */
  failure: { reason: UnparsableReason; detail: string };
  /**
   * Opens the original bytes from their first byte, as received. Called twice: once for the
   * header (the stream is destroyed once the header is read), once for the attachment.
   */
  original: () => Readable;
  /** Domain for `From: unknown@<domain>` when the original From is not a valid address (Genesys `default_domain`). */
  defaultDomain: string;
  /** When the original header counts as parsable enough to copy; defaults as the stage's. */
  limits?: Pick<MimeLimits, 'maxHeaderSize' | 'maxHeaderLine'>;
  /** The Date of a wrapping message whose original header could not be read. */
  now?: Date;
  /** Set when the original holds something the attachment rules block: it is not attached. */
  blocked?: BlockedOriginal;
}

/**
 * The original of a wrapping message that is not attached, because the attachment rules block
 * something in it (policy/attachments/original-scan.ts): a placeholder part stands where it would be,
 * as for any blocked attachment, and the text says why.
 */
export interface BlockedOriginal {
  /** What in the original is blocked, and where. */
  finding: OriginalFinding;
  /** The quarantine id when the original is kept in quarantine; absent when it is deleted. */
  quarantineId?: string;
  /**
   * Takes, in order, the bytes of the part that would have carried the original: its header
   * block and base64 body as the splitter reads the part (without the line end that belongs
   * to the closing boundary line), which is what restore puts back in place of the placeholder.
   */
  keep?: (bytes: Buffer) => Promise<void>;
  /** Told the size of the original once it has been read whole (what `quarantine export` gives back). */
  kept?: (originalBytes: number) => void;
}

/** Why the original is blocked, in one line for the placeholder, the text and the listings. */
export function blockedOriginalRule(finding: OriginalFinding): string {
  return `the original contains "${finding.fileName}" (${finding.where}): ${finding.rule}`;
}

/** Name of the attached original. */
export const ORIGINAL_FILE_NAME = 'original-message.eml';
const CRLF = '\r\n';
// Base64 line of 76 characters (RFC 2045 6.8) = 57 input bytes.
const BASE64_LINE_BYTES = 57;

/**
 * The wrapping message as a stream of bytes (CRLF line ends). Headers of the original are
 * copied when its header section passes the same checks the wrapping stage makes, except
 * those that describe the body (`Content-*`, `MIME-Version`), which would contradict the
 * wrapper's own. Otherwise the subject is `Unknown subject`; either way, a From that is not a
 * valid address becomes `unknown@<defaultDomain>`.
 */
export function wrappingMessage(opts: WrappingMessageOptions): Readable {
  const limits = opts.limits ?? defaultMimeLimits;
  const boundary = `mailgate-wrap-${randomBytes(12).toString('hex')}`;
  async function* bytes(): AsyncGenerator<Buffer> {
    const header = await readHeaderBlock(opts.original(), limits.maxHeaderSize);
    const copied = header && !headerProblem(header, limits, 'the message header') ? copiedHeaderLines(header) : undefined;
    const own = [`X-Mailgate-Wrapped: ${opts.failure.reason}`, 'MIME-Version: 1.0', `Content-Type: multipart/mixed; boundary="${boundary}"`];
    let head: Buffer | undefined;
    if (copied) {
      const from = copied.validFrom ? [] : [`From: unknown@${opts.defaultDomain}`];
      head = Buffer.from([...from, ...copied.lines, ...own].join(CRLF) + CRLF + CRLF, 'latin1');
      // The lines added to a header just within the limit can take it over: the wrapper
      // would then fail the very splitter it has to pass.
      if (headerCost(head) > limits.maxHeaderSize) head = undefined;
    }
    head ??= Buffer.from(
      [
        `From: unknown@${opts.defaultDomain}`,
        'Subject: Unknown subject',
        `Date: ${rfc5322Date(opts.now ?? new Date())}`,
        `Message-ID: <wrapped.${randomBytes(8).toString('hex')}@${opts.defaultDomain}>`,
        ...own,
      ].join(CRLF) +
        CRLF +
        CRLF,
      'latin1',
    );
    yield head;
    const blocked = opts.blocked;
    yield Buffer.from(
      [
        `This is a wrapping message in MIME format: the original message is ${blocked ? 'blocked by the attachment policy' : 'attached'}.`,
        '',
        `--${boundary}`,
        'Content-Type: text/plain; charset=us-ascii',
        'Content-Transfer-Encoding: 7bit',
        '',
        ...explanation(opts.failure, blocked),
        `--${boundary}`,
        '',
      ].join(CRLF),
      'latin1',
    );
    const attachmentHeader = Buffer.from(
      [
        `Content-Type: application/octet-stream; name="${ORIGINAL_FILE_NAME}"`,
        `Content-Disposition: attachment; filename="${ORIGINAL_FILE_NAME}"`,
        'Content-Description: Original Incoming Email',
        'Content-Transfer-Encoding: base64',
        '',
        '',
      ].join(CRLF),
      'latin1',
    );
    if (!blocked) {
      yield attachmentHeader;
      yield* base64Lines(opts.original());
    } else {
      await keepOriginal(blocked, attachmentHeader, opts.original());
      const placeholder = placeholderPart({
        fileName: ORIGINAL_FILE_NAME,
        contentType: 'application/octet-stream',
        rule: blockedOriginalRule(blocked.finding),
        quarantineId: blocked.quarantineId,
      });
      yield Buffer.from(placeholder.headerLines.join(CRLF) + CRLF + CRLF + placeholder.text + CRLF, 'utf8');
    }
    yield Buffer.from(`--${boundary}--${CRLF}`, 'latin1');
  }
  return Readable.from(bytes(), { objectMode: false });
}

/** Hands the part that would have carried the original to `blocked.keep` (or only reads the original through, to count it). */
async function keepOriginal(blocked: BlockedOriginal, attachmentHeader: Buffer, original: Readable): Promise<void> {
  const keep = blocked.keep;
  let size = 0;
  if (!keep) {
    // Deleted: nothing is kept, and the original is not read (nor its size told: no record is made).
    original.destroy();
    return;
  }
  await keep(attachmentHeader);
  // The last line end belongs to the boundary line after the part: held back, and never kept.
  let held = Buffer.alloc(0);
  const counted = countBytes(original, (n) => (size += n));
  for await (const lines of base64Lines(counted)) {
    const data = held.length ? Buffer.concat([held, lines]) : lines;
    await keep(data.subarray(0, data.length - 2));
    held = Buffer.from(data.subarray(data.length - 2));
  }
  blocked.kept?.(size);
}

/** `input` as an async iterable that tells `count` the size of every chunk. */
async function* countBytes(input: Readable, count: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const chunk of input as AsyncIterable<Buffer>) {
    count(chunk.length);
    yield chunk;
  }
}

/** The text part: the Genesys sentence, the reason, and where the original is (or why it is not attached). */
function explanation(failure: { reason: UnparsableReason; detail: string }, blocked: BlockedOriginal | undefined): string[] {
  const lines = [
    `Error encountered during preprocessing of this message: ${unparsableReasons[failure.reason]} [${failure.reason}].`,
    printable(failure.detail, 600),
    '',
  ];
  if (!blocked) return [...lines, 'Original Incoming Email is attached to this Email.', ''];
  const qid = blocked.quarantineId;
  return [
    ...lines,
    // Cisco guide, "Blocking Attachments": what the policy blocks does not come through, wrapped or not.
    printable(`The original incoming email is not attached: ${blockedOriginalRule(blocked.finding)}.`, 600),
    qid
      ? `It is kept in quarantine as ${qid}; an administrator can restore it into this message (mailgate quarantine restore ${qid}).`
      : 'It was deleted, as the attachment policy says (action = "delete").',
    '',
  ];
}

/**
 * The header section at the start of `input`, up to and including the empty line that ends
 * it (or all of the input when it has none); undefined when it is longer than `limit`. The
 * stream is destroyed once the header is read.
 */
export async function readHeaderBlock(input: Readable, limit: number): Promise<Buffer | undefined> {
  let held = Buffer.alloc(0);
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      const from = Math.max(0, held.length - 3);
      held = Buffer.concat([held, chunk]);
      const end = headerEnd(held, from);
      if (end >= 0) return end > limit ? undefined : held.subarray(0, end);
      if (held.length > limit) return undefined;
    }
    return held;
  } finally {
    input.destroy();
  }
}

/** Offset just after the empty line ending a header section, searching from `from`; -1 if none yet. */
function headerEnd(buf: Buffer, from: number): number {
  // An empty header: the message starts with its empty line.
  if (from === 0 && (buf[0] === 0x0a || (buf[0] === 0x0d && buf[1] === 0x0a))) return buf[0] === 0x0a ? 1 : 2;
  for (let i = buf.indexOf(0x0a, from); i >= 0 && i + 1 < buf.length; i = buf.indexOf(0x0a, i + 1)) {
    if (buf[i + 1] === 0x0a) return i + 2;
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

/** Header lines of the original worth copying, folded with CRLF, and whether its From is a valid address. */
function copiedHeaderLines(raw: Buffer): { lines: string[]; validFrom: boolean } {
  const headers = new Headers(raw);
  const lines: string[] = [];
  let validFrom = false;
  let sawFrom = false;
  for (const { key, line } of headers.getList()) {
    if (!key || key.startsWith('content-') || key === 'mime-version') continue;
    if (key === 'from') {
      // Only the first From counts (RFC 5322 3.6: exactly one); an invalid one is replaced.
      if (sawFrom || !isValidFrom(line)) continue;
      sawFrom = validFrom = true;
    }
    lines.push(line.replace(/\r?\n/g, CRLF));
  }
  return { lines, validFrom };
}

const ADDRESS = /^[^\s@<>()",;:]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/** Whether a `From:` line names at least one mailbox and every mailbox it names is an address. */
function isValidFrom(line: string): boolean {
  // No sender's From is this long; parsing a huge one would hold the event loop (header-text.ts).
  if (line.length > HEADER_READ_LIMIT) return false;
  const value = Buffer.from(line, 'latin1').toString('utf8');
  const entries = addressparser(value.slice(value.indexOf(':') + 1), { flatten: true });
  if (entries.length === 0) return false;
  return entries.every((e) => 'address' in e && typeof e.address === 'string' && ADDRESS.test(e.address));
}

/** The bytes of `input` in base64, 76 characters a line, CRLF line ends; streams in constant memory. */
export async function* base64Lines(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let rest = Buffer.alloc(0);
  for await (const chunk of input) {
    const data = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    const whole = data.length - (data.length % BASE64_LINE_BYTES);
    if (whole > 0) yield encodeLines(data.subarray(0, whole));
    rest = Buffer.from(data.subarray(whole));
  }
  if (rest.length) yield encodeLines(rest);
}

function encodeLines(data: Buffer): Buffer {
  const out: string[] = [];
  for (let i = 0; i < data.length; i += BASE64_LINE_BYTES) out.push(data.toString('base64', i, Math.min(i + BASE64_LINE_BYTES, data.length)));
  return Buffer.from(out.join(CRLF) + CRLF, 'latin1');
}
