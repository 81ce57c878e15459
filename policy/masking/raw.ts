/**
 * Masking a message that could not be parsed (its original is attached to a wrapping message,
 * Genesys "Handling Unparsable E-Mails"), or an attached message nested too deep to split:
 * its bytes are read as text line by line, with just enough structure to treat header fields
 * as the parsed path does. The built-in patterns mask the subject and bodies; in every other
 * header field (Message-ID, References, Received, X-...), in MIME part headers and in boundary
 * lines they find nothing, as digits there are identifiers, not a customer's data. An admin's
 * own pattern still matches everywhere.
 *
 * The structure is guessed, since the message is broken: a header block runs from the start
 * (or from the line after a `--boundary` line, or after the header of a part that says
 * message/rfc822) to the first empty line; a line that is neither a field nor a continuation
 * is masked as body text.
 */
import { TextMasker, type MaskCounts, type Masker } from './text-masker.js';

/** Header fields whose text the built-ins mask, as MessageMasker does for a parsed message. */
const maskedFields = /^(?:subject|thread-topic)$/i;
/** A field name (RFC 5322 section 3.6.8: printable ASCII but colon) and its colon. */
const fieldName = /^([!-9;-~]{1,76})[ \t]*:/;
/** Longest field name looked for: a line start without a colon this far in is not a field. */
const NAME_LIMIT = 80;
/** How much of a header block is kept to tell whether a message follows it. */
const SAMPLE_LIMIT = 4096;

type Block = 'message-header' | 'part-header' | 'body';

/** A line-aware wrapper of the text masker for raw messages (see the module comment). */
export class RawMessageMasker implements Masker {
  #block: Block = 'message-header';
  #atLineStart = true;
  /** The current line, and the continuation lines of its field, are shielded. */
  #shielded = false;
  /** The start of a line that cannot be classified yet. */
  #hold = '';
  /** The header block read so far, up to SAMPLE_LIMIT: does it say message/rfc822? */
  #sample = '';

  readonly #text: TextMasker;

  constructor(text: TextMasker) {
    this.#text = text;
  }

  get counts(): MaskCounts {
    return this.#text.counts;
  }

  write(piece: string): string {
    return this.#read(this.#hold + piece, false);
  }

  end(): string {
    const rest = this.#hold;
    this.#hold = '';
    return this.#read(rest, true) + this.#text.end();
  }

  #read(s: string, final: boolean): string {
    this.#hold = '';
    let out = '';
    // Consecutive lines with the same shielding go to the masker in one write.
    let runStart = 0;
    let runShielded = this.#shielded;
    const flush = (to: number) => {
      if (to > runStart) out += this.#text.write(s.slice(runStart, to), runShielded);
      runStart = to;
    };
    for (let i = 0; i < s.length;) {
      if (this.#atLineStart) {
        if (!this.#classify(s, i, final)) {
          flush(i);
          this.#hold = s.slice(i);
          return out;
        }
        this.#atLineStart = false;
        if (this.#shielded !== runShielded) {
          flush(i);
          runShielded = this.#shielded;
        }
      }
      const nl = s.indexOf('\n', i);
      const end = nl < 0 ? s.length : nl + 1;
      if (this.#block !== 'body' && this.#sample.length < SAMPLE_LIMIT) this.#sample += s.slice(i, Math.min(end, i + SAMPLE_LIMIT));
      i = end;
      if (nl >= 0) this.#atLineStart = true;
    }
    flush(s.length);
    return out;
  }

  /**
   * Decides how the line starting at `at` is read, and which block follows; false when more
   * text is needed to tell.
   */
  #classify(s: string, at: number, final: boolean): boolean {
    const c = s[at]!;
    if (this.#block === 'body') {
      // `--boundary` starts a part header; "-- " is a signature separator.
      if (c !== '-') return this.#set(false);
      if (s.length - at < 3 && !final) return false;
      if (s[at + 1] === '-' && s[at + 2] !== undefined && !/\s/.test(s[at + 2]!)) {
        this.#block = 'part-header';
        this.#sample = '';
        return this.#set(true);
      }
      return this.#set(false);
    }
    if (c === '\n' || (c === '\r' && s[at + 1] === '\n')) {
      // The empty line ending a header block: a body follows, or a message when the block said so.
      const message = /content-type:\s*message\/(?:rfc822|global)\b/i.test(this.#sample);
      this.#block = message ? 'message-header' : 'body';
      this.#sample = '';
      return this.#set(false);
    }
    if (c === '\r' && at + 1 >= s.length && !final) return false;
    // A continuation line belongs to the field before it.
    if (c === ' ' || c === '\t') return true;
    const head = s.slice(at, at + NAME_LIMIT);
    const field = fieldName.exec(head);
    if (!field) {
      const undecided = !final && head.length < NAME_LIMIT && !/[\r\n]/.test(head);
      if (undecided) return false;
      // Not a field: body text in a broken header, masked as such.
      return this.#set(false);
    }
    const name = field[1]!;
    if (this.#block === 'message-header') return this.#set(!maskedFields.test(name));
    // In a part header only the MIME fields are structure; anything else may be a customer's text.
    return this.#set(/^(?:content-|mime-version$)/i.test(name));
  }

  #set(shielded: boolean): true {
    this.#shielded = shielded;
    return true;
  }
}
