/**
 * A bound on the two header fields the MIME splitter itself parses. mailsplit reads every
 * part's Content-Type and Content-Disposition with libmime (parameters, RFC 2231
 * continuations, encoded words in a file name) in one synchronous call when the part's header
 * ends, and a header section may hold a mebibyte: a 900 KiB encoded file name held the event
 * loop, and every session the gateway serves, for half a second before any stage ran. No real
 * Content-Type or Content-Disposition comes near 16 KiB (a file name is at most 255
 * characters on any file system), so a longer one makes the message unparsable
 * (`header_too_large`), found here, in the raw bytes, before the splitter reads it.
 *
 * The bytes are not parsed: any line that starts like one of those fields counts, with the
 * folded lines after it, wherever it is. In a body that takes a quoted header followed by
 * 16 KiB of indented lines; such a message is wrapped, not lost.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { UnparsableMessage } from './unparsable.js';

/** Longest Content-Type or Content-Disposition field, folded lines included, in bytes. */
export const MAX_CONTENT_FIELD = 16 * 1024;

// A line is read this far to tell which field it starts.
const HEAD = 32;
const FIELD = /^(content-(?:type|disposition))[ \t]*:/i;
const LF = 0x0a;
const isBlank = (byte: number | undefined) => byte === 0x20 || byte === 0x09;
// Only a line starting with "c" can name the fields.
const startsName = (byte: number | undefined) => byte === 0x63 || byte === 0x43;

/** Reads a message's bytes in order; finds the first Content-Type or Content-Disposition field over the limit. */
export class ContentFieldCheck {
  readonly #limit: number;
  /** The start of the current line, while it is too short to tell what it is. */
  #head = Buffer.alloc(0);
  /** Whether the current line's start has been read. */
  #inLine = false;
  /** The field the current line belongs to, when it is one of the two. */
  #field: string | undefined;
  #fieldBytes = 0;

  constructor(limit = MAX_CONTENT_FIELD) {
    this.#limit = limit;
  }

  /** Reads the next bytes: `header_too_large` once a field goes over the limit, else undefined. */
  check(chunk: Buffer): UnparsableMessage | undefined {
    let i = 0;
    while (i < chunk.length) {
      const lf = chunk.indexOf(LF, i);
      const end = lf < 0 ? chunk.length : lf + 1;
      if (!this.#inLine) {
        if (this.#head.length === 0 && !startsName(chunk[i])) {
          // Most lines: the first byte tells, nothing is copied.
          this.#lineStarts(chunk[i]!);
        } else {
          // Read the line's start, carried over from the last chunk when it was cut there.
          const head = Buffer.concat([this.#head, chunk.subarray(i, Math.min(end, i + HEAD))]);
          if (lf < 0 && head.length < HEAD) {
            this.#head = head;
            break;
          }
          this.#lineStarts(head[0]!, head);
          if (this.#field !== undefined) this.#fieldBytes += this.#head.length;
          this.#head = Buffer.alloc(0);
        }
        this.#inLine = true;
      }
      if (this.#field !== undefined) {
        this.#fieldBytes += end - i;
        if (this.#fieldBytes > this.#limit) {
          return new UnparsableMessage('header_too_large', `A ${this.#field} field runs to more than ${this.#limit} bytes, over the limit for it`);
        }
      }
      if (lf >= 0) this.#inLine = false;
      i = end;
    }
    return undefined;
  }

  /** A line starts: it continues the current field (folded), starts one of the two fields, or neither. */
  #lineStarts(first: number, head?: Buffer): void {
    if (isBlank(first)) return;
    this.#fieldBytes = 0;
    const name = head && FIELD.exec(head.toString('latin1'))?.[1]?.toLowerCase();
    this.#field = name ? (name === 'content-type' ? 'Content-Type' : 'Content-Disposition') : undefined;
  }
}

/** Passes bytes through unchanged; fails with `header_too_large` at the first Content-Type or Content-Disposition field over the limit. */
export class ContentFieldGuard extends Transform {
  readonly #check: ContentFieldCheck;

  constructor(limit = MAX_CONTENT_FIELD) {
    super();
    this.#check = new ContentFieldCheck(limit);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const err = this.#check.check(chunk);
    if (err) done(err);
    else done(null, chunk);
  }
}
