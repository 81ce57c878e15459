/**
 * The original of a wrapping message judged by the attachment rules (issue 17). A message that
 * cannot be parsed is stored as a wrapping message with the original attached, byte for byte
 * (Genesys seed, "Handling Unparsable E-Mails"); a sender who can break a message on purpose
 * would get any file through inside it (Cisco guide, "Blocked File Extensions"). So ingest
 * reads the spooled original once more, here, as far as it can be read and more leniently than
 * any mail client reads it:
 *
 * - every boundary line ends a part: those of every `boundary=` found, and guessed ones (a
 *   `--token` line followed by a header field or an empty line), which is how a multipart
 *   without a usable boundary, or one that never closes, still shows its parts;
 * - every part header is read up to its empty line, past lines that are not fields (a client
 *   may take them as the start of the body: the body is read from there as well), and every
 *   `name=`/`filename=` in it is judged, in any byte encoding: an undecodable name is read as
 *   latin1, so a trailing `.exe` in ASCII is enough;
 * - every body is sniffed as declared, and also as raw bytes and as base64, and zip archives
 *   found so are listed (part-inspector.ts, zip-listing.ts);
 * - an attached message (message/rfc822) is read the same way: inline, its header starts the
 *   next part; encoded, it is decoded and read by a scanner of its own, down to the archive
 *   depth limit (`zip_max_depth`), below which it is blocked as uninspectable, as the stage does.
 *
 * The first thing that would be blocked is the answer; the whole original is then blocked
 * with the policy's action (policy/attachments/original.ts). One pass over a stream: bodies are never held, a header section
 * is held up to 1 MiB (the splitter's own bound), and the scan yields to the event loop every
 * 10 ms so other sessions are not held up by a big or pathological message.
 */
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MimeNode } from '@zone-eu/mailsplit';
import type { AttachmentRules } from './rules.js';
import { PartInspector, type PartVerdict } from './part-inspector.js';
import { bodyDecoder, type BodyDecoder } from '../mime/transfer-decode.js';
import { MAX_CONTENT_FIELD } from '../mime/content-field-guard.js';
import { defaultMimeLimits } from '../mime/mime-check.js';
import { visible } from './names.js';
import { printable } from '../mime/unparsable.js';

/** What in the original would be blocked. */
export interface OriginalFinding {
  /** The file's name (or its content type when it has none). */
  fileName: string;
  contentType: string;
  /** Where it is, for the admin: `part 3`, `part 2 of the message attached as part 4`. */
  where: string;
  /** The rule that blocks it, as the attachments stage words it. */
  rule: string;
  evidence: string[];
}

/**
 * The first thing in `original` the rules block, or undefined when nothing is. A failure of
 * the scan itself blocks too (what could not be read could hide anything); a failure to read
 * `original` rejects. The stream is destroyed once the answer is known.
 */
export async function blockedInOriginal(original: Readable, rules: AttachmentRules): Promise<OriginalFinding | undefined> {
  const pacer = new Pacer();
  const scanner = new OriginalScanner(rules, 1, '');
  try {
    for await (const chunk of original as AsyncIterable<Buffer>) {
      if (await safely(() => scanner.push(chunk, pacer))) break;
    }
    if (!scanner.found) await safely(() => scanner.end(pacer));
    return scanner.found;
  } finally {
    original.destroy();
  }

  async function safely(step: () => Promise<void>): Promise<boolean> {
    try {
      await step();
    } catch (err) {
      scanner.found ??= {
        fileName: 'the original message',
        contentType: 'message/rfc822',
        where: 'the message',
        rule: `the original cannot be inspected safely: ${printable(String((err as Error)?.message ?? err), 200)}`,
        evidence: [],
      };
    }
    return scanner.found !== undefined;
  }
}

const LF = 0x0a;
const DASH = 0x2d;
/** A header section is held up to this many bytes, as the splitter holds one. */
const HEADER_HOLD = defaultMimeLimits.maxHeaderSize;
/** Past the hold, Content-* fields are still kept, up to this many bytes more. */
const CONTENT_FIELDS_BEYOND_HOLD = 64 * 1024;
/** The longest line read as a possible boundary line: `--`, a boundary, `--`, 998 blanks (mailsplit's bound), the line end. */
const DELIMITER_LINE_MAX = 2 + 200 + 2 + 998 + 4;
// RFC 5322 3.6.8 field name; obs-field allows blanks before the colon (as mime-check.ts).
const FIELD = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;
const CONTENT_FIELD = /^content-[a-z-]*[ \t]*:/i;
const TYPE_OR_DISPOSITION = /^content-(?:type|disposition)[ \t]*:/i;
const BOUNDARY_PARAM = /boundary[ \t]*=[ \t]*(?:"([^"\r\n]{1,200})"|([^;\s"]{1,200}))/gi;
// RFC 2046 5.1.1 bchars, and not ending in a blank: what a guessed boundary may look like.
const TOKEN = /^[0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,199}$/;
// Binary content that may hold any byte sequence, a guessed boundary line included.
const BINARY_KINDS = new Set(['pe', 'elf', 'zip', 'ole']);

/** Yields to the event loop once the current turn has run for 10 ms (as the stage chain paces itself). */
class Pacer {
  #since = performance.now();
  async pace(): Promise<void> {
    if (performance.now() - this.#since < 10) return;
    await nextTurn();
    this.#since = performance.now();
  }
}

/** One part as the scan found it: its header lines, then its body read every way. */
class ScanPart {
  index: number;
  readonly header: Buffer[] = [];
  headerBytes = 0;
  /** A line that is not a field came before the header's empty line: the body may start there. */
  mixed = false;
  /** Field lines after the body started (a header with no end), judged for names at the end. */
  readonly lateFields: Buffer[] = [];
  lateBytes = 0;
  /**
   * The header with no end did end after all (an empty line came): a client that skips the line
   * that is not a field reads the body from here, as this node says. Read so as well.
   */
  second: MimeNode | undefined;
  secondStarted = false;
  /** The header has been read (the empty line, a boundary line, or a line that is not a field came). */
  headerDone = false;
  /** The node its header describes; made when the body has content, for a header with no Content-* fields. */
  node: MimeNode | undefined;
  /** As declared, then as base64 and as raw bytes (whichever are not the declared reading). */
  inspectors: { inspector: PartInspector; reading: string }[] | undefined;
  /** An encoded attached message, read by a scanner of its own. */
  nested: { scanner: OriginalScanner; decoder: BodyDecoder } | undefined;
  /** The body began with content of a binary kind, as raw bytes: a guessed boundary line cannot end it. */
  rawBinary = false;

  constructor(index: number) {
    this.index = index;
  }

  /** Whether the part held nothing and judged nothing: ending it costs nothing, and it can be reused for the next. */
  get empty(): boolean {
    return this.header.length === 0 && !this.node && !this.inspectors && !this.nested && !this.mixed && this.lateFields.length === 0;
  }
}

class OriginalScanner {
  found: OriginalFinding | undefined;
  readonly #rules: AttachmentRules;
  readonly #depth: number;
  /** Where this scanner reads, for the admin ('' for the message, else ` of the message attached as part 4`). */
  readonly #where: string;
  readonly #boundaries = new Set<string>();
  #mode: 'header' | 'body' = 'header';
  #part: ScanPart;
  #parts = 0;
  #root: MimeNode | undefined;
  /** The current line, while its end has not arrived. */
  #line: Buffer[] = [];
  #lineBytes = 0;
  /** The current line is too long to hold: its bytes go on as body (or are dropped, in a header). */
  #spilling = false;
  /** A line that looks like the boundary line of a boundary not seen before; the next line decides. */
  #guess: Buffer | undefined;
  #lines = 0;
  #pacer: Pacer | undefined;

  constructor(rules: AttachmentRules, depth: number, where: string) {
    this.#rules = rules;
    this.#depth = depth;
    this.#where = where;
    this.#part = new ScanPart(0);
  }

  async push(chunk: Buffer, pacer: Pacer): Promise<void> {
    this.#pacer = pacer;
    let at = 0;
    if (this.#lineBytes > 0 || this.#spilling) {
      const lf = chunk.indexOf(LF);
      const end = lf < 0 ? chunk.length : lf + 1;
      await this.#continueLine(chunk.subarray(0, end), lf >= 0);
      at = end;
    }
    // Body lines gather in one batch for the inspectors; only lines that may be boundary
    // lines, and header lines, are read one by one.
    let batch = at;
    while (at < chunk.length && !this.found) {
      const lf = chunk.indexOf(LF, at);
      if (lf < 0) {
        if (this.#mode === 'body' && !this.#guess && !(chunk[at] === DASH && (at + 1 === chunk.length || chunk[at + 1] === DASH))) {
          this.#spilling = true; // the rest of this body line, in the next chunk, is body too
          at = chunk.length;
          break;
        }
        await this.#body(chunk.subarray(batch, at));
        await this.#continueLine(chunk.subarray(at), false);
        batch = at = chunk.length;
        break;
      }
      const next = lf + 1;
      if (this.#mode === 'body' && !this.#guess && !(chunk[at] === DASH && chunk[at + 1] === DASH)) {
        at = next;
        continue;
      }
      if (batch < at && !isBlank(chunk, batch, at)) await this.#body(chunk.subarray(batch, at));
      if (!this.#emptyPartLine(chunk, at, next)) await this.#take(chunk.subarray(at, next));
      batch = at = next;
      if ((++this.#lines & 63) === 0) await pacer.pace();
    }
    if (batch < at && !this.found) await this.#body(chunk.subarray(batch, at));
  }

  /**
   * The lines around a part that holds nothing (a boundary line after it, the empty line of
   * its empty header), taken without a copy or a wait: a message of a million empty parts
   * (9 MB) is a million of them. False when the line needs the general reading.
   */
  #emptyPartLine(chunk: Buffer, start: number, end: number): boolean {
    const part = this.#part;
    if (this.#guess || !part.empty) return false;
    if (this.#mode === 'header') {
      if (!(end - start === 1 || (end - start === 2 && chunk[start] === 0x0d))) return false;
      part.headerDone = true; // an empty header: text/plain, nothing to judge
      this.#mode = 'body';
      return true;
    }
    const boundary = delimiterToken(chunk, start, end);
    if (!boundary || !this.#boundaries.has(boundary.token)) return false;
    // The next part reuses this one's object.
    part.index = ++this.#parts;
    part.headerDone = false;
    part.rawBinary = false;
    this.#mode = boundary.closing ? 'body' : 'header';
    if (boundary.closing) part.headerDone = true;
    return true;
  }

  async end(pacer: Pacer): Promise<void> {
    this.#pacer = pacer;
    if (this.#lineBytes > 0) {
      const line = Buffer.concat(this.#line, this.#lineBytes);
      this.#line = [];
      this.#lineBytes = 0;
      await this.#take(line);
    }
    if (this.#guess) await this.#rejectGuess();
    if (!this.found) await this.#endPart();
  }

  /** More of a line that began in an earlier chunk (`ends`: its LF is in `bytes`). */
  async #continueLine(bytes: Buffer, ends: boolean): Promise<void> {
    if (this.#spilling) {
      if (this.#mode === 'body' || this.#part.mixed) await this.#body(bytes);
      else this.#tooLongHeaderLine(bytes);
      if (ends) this.#spilling = false;
      return;
    }
    this.#line.push(Buffer.from(bytes));
    this.#lineBytes += bytes.length;
    if (ends) {
      const line = Buffer.concat(this.#line, this.#lineBytes);
      this.#line = [];
      this.#lineBytes = 0;
      return this.#take(line);
    }
    const limit = this.#mode === 'body' ? DELIMITER_LINE_MAX : Math.max(DELIMITER_LINE_MAX, HEADER_HOLD - this.#part.headerBytes);
    if (this.#lineBytes <= limit) return;
    // Too long to be a boundary line (or to hold in a header): pass it on as it comes.
    const held = Buffer.concat(this.#line, this.#lineBytes);
    this.#line = [];
    this.#lineBytes = 0;
    this.#spilling = true;
    if (this.#guess) await this.#rejectGuess();
    if (this.#mode === 'body' || this.#part.mixed) await this.#body(held);
    else this.#tooLongHeaderLine(held);
  }

  /** One whole line, its line end included. */
  async #take(line: Buffer): Promise<void> {
    if (this.found) return;
    if (this.#guess) {
      const guess = this.#guess;
      if (isEmptyLine(line) || FIELD.test(line.toString('latin1', 0, 200))) {
        this.#guess = undefined;
        const boundary = delimiterToken(guess);
        if (boundary) this.#boundaries.add(boundary.token);
        await this.#delimiter(boundary?.closing ?? false);
      } else await this.#rejectGuess();
      if (this.found) return;
    }
    const boundary = delimiterToken(line);
    if (boundary) {
      if (this.#boundaries.has(boundary.token)) return this.#delimiter(boundary.closing);
      if (!this.#part.rawBinary && TOKEN.test(boundary.token)) {
        this.#guess = line;
        return;
      }
    }
    if (this.#mode === 'body') return this.#body(line);
    return this.#headerLine(line);
  }

  /** The held line was not a boundary line after all: it is what it would have been. */
  async #rejectGuess(): Promise<void> {
    const line = this.#guess!;
    this.#guess = undefined;
    if (this.#mode === 'body') await this.#body(line);
    else await this.#headerLine(line);
  }

  /** A boundary line: the part ends; a new one starts, with a header (opening line) or without one (closing line: an epilogue). */
  async #delimiter(closing: boolean): Promise<void> {
    await this.#endPart();
    if (this.found) return;
    this.#part = new ScanPart(++this.#parts);
    if (closing) {
      this.#mode = 'body';
      this.#startBody();
    } else this.#mode = 'header';
  }

  async #headerLine(line: Buffer): Promise<void> {
    const part = this.#part;
    if (isEmptyLine(line)) {
      if (part.mixed) {
        this.#mode = 'body';
        this.#secondReading(part);
        return;
      }
      // The empty line ends the header (RFC 5322 2.1); an inline message's header comes next.
      this.#startBody();
      if (part.node?.contentType === 'message/rfc822' && isRaw(part.node.encoding)) {
        await this.#endPart();
        this.#part = new ScanPart(++this.#parts);
        return;
      }
      this.#mode = 'body';
      return;
    }
    const text = line.toString('latin1', 0, 200);
    const isField = FIELD.test(text) || ((line[0] === 0x20 || line[0] === 0x09) && (part.header.length > 0 || part.lateFields.length > 0));
    if (part.mixed) {
      if (isField) part.lateBytes = holdLine(part.lateFields, part.lateBytes, line);
      else await this.#body(line);
      return;
    }
    if (isField) {
      this.#holdHeaderLine(line);
      return;
    }
    // An mbox "From " line before the message header.
    if (part.index === 0 && this.#depth === 1 && part.header.length === 0 && text.startsWith('From ')) return;
    // Not a field: a client may take the body to start here. Read on for fields all the same.
    part.mixed = true;
    this.#startBody();
    await this.#body(line);
  }

  #holdHeaderLine(line: Buffer): void {
    const part = this.#part;
    part.headerBytes = holdLine(part.header, part.headerBytes, line);
  }

  /** A header line too long to hold, in pieces: one that starts a Content-Type or Content-Disposition cannot be read safely. */
  #tooLongHeaderLine(piece: Buffer): void {
    const part = this.#part;
    if (part.header.length > 0 && part.header[part.header.length - 1] === TOO_LONG) return;
    part.header.push(TOO_LONG);
    if (TYPE_OR_DISPOSITION.test(piece.toString('latin1', 0, 64)))
      this.#uninspectable(`a ${piece.toString('latin1', 0, piece.indexOf(':'))} field longer than ${HEADER_HOLD} bytes`);
  }

  /** The header is over: the node it describes, and the names it gives judged at once. */
  #startBody(): void {
    const part = this.#part;
    if (part.headerDone) return;
    part.headerDone = true;
    const lines = part.header.filter((l) => l.length > 0);
    const fields = contentFields(lines);
    if (this.#oversized(fields)) return;
    // No Content-* field: the part is text/plain (RFC 2045 5.2), and has no name to judge. Its
    // node is made only if its body has content (a million empty parts cost no million nodes).
    if (fields.length === 0) return;
    const node = this.#newNode(lines);
    // The splitter parses an inline attached message in place, and the stage judges its parts, not it (part-inspector.ts).
    if (node.contentType === 'message/rfc822' && isRaw(node.encoding) && node.disposition === 'inline') node.messageNode = true;
    this.#root ??= node;
    part.node = node;
    if (node._boundary) this.#boundaries.add(node._boundary.toString('latin1'));
    for (const field of fields) {
      // A boundary the node does not take (not ASCII, trailing blanks) still ends parts in some reader.
      for (const m of field.text.matchAll(BOUNDARY_PARAM)) this.#boundaries.add((m[1] ?? m[2] ?? '').trimEnd());
    }
    this.#judgeNames(part, node, 'by its name');
  }

  /**
   * Whether a Content-* field is too big to parse: mailsplit parses these in one synchronous
   * call (content-field-guard.ts), so what they name cannot be read safely (and is blocked).
   */
  #oversized(fields: readonly { name: string; bytes: number }[]): boolean {
    const oversized = fields.find((f) => f.bytes > MAX_CONTENT_FIELD);
    if (oversized) this.#uninspectable(`a ${oversized.name} field of ${oversized.bytes} bytes (the limit is ${MAX_CONTENT_FIELD})`);
    return oversized !== undefined;
  }

  /** Judges the names a header gives (the body is read elsewhere). */
  #judgeNames(part: ScanPart, node: MimeNode, reading: string): void {
    const names = new PartInspector(node, this.#rules, this.#depth, { nestedMessages: false });
    if (names.nameVerdict) this.#judged(part, names, names.nameVerdict, reading);
  }

  /**
   * The node of the whole header of a part with a line that is not a field in it (the held
   * lines, then the fields after that line), its names judged; undefined when a field is too
   * big to read, or (`needFields`) when no Content-* field follows the line.
   */
  #lateHeader(part: ScanPart, needFields: boolean): MimeNode | undefined {
    const late = part.lateFields.filter((l) => l.length > 0);
    const fields = contentFields(late);
    if (this.#oversized(fields) || (needFields && fields.length === 0)) return undefined;
    const node = this.#newNode([...part.header.filter((l) => l.length > 0), ...late]);
    this.#judgeNames(part, node, 'by a name in its header after a line that is not a field');
    return node;
  }

  /** The node of a header section; the first made is the message's own (the root). */
  #newNode(lines: readonly Buffer[]): MimeNode {
    const node = new MimeNode(this.#root ?? false);
    for (const line of lines) node.addHeaderChunk(line);
    node.addHeaderChunk(Buffer.from('\r\n'));
    node.parseHeaders();
    return node;
  }

  /** The part's node, made now for a header without Content-* fields. */
  #nodeOf(part: ScanPart): MimeNode {
    if (!part.node) {
      part.node = this.#newNode([]);
      this.#root ??= part.node;
    }
    return part.node;
  }

  /** The header of a part whose body may have started at a line that is not a field has ended: the body as its whole header says. */
  #secondReading(part: ScanPart): void {
    part.second = this.#lateHeader(part, false);
    if (part.second?._boundary) this.#boundaries.add(part.second._boundary.toString('latin1'));
  }

  /** Body bytes of the current part, read every way. */
  async #body(bytes: Buffer): Promise<void> {
    if (bytes.length === 0 || this.found) return;
    const part = this.#part;
    if (!part.headerDone) this.#startBody();
    if (this.found) return;
    if (!part.inspectors || (part.second && !part.secondStarted)) {
      // Nothing is judged of white space (a part's body is mostly a line end).
      if (isBlank(bytes)) return;
      if (!part.inspectors) this.#inspectors(part, this.#nodeOf(part), '');
      if (part.second && !part.secondStarted) {
        part.secondStarted = true;
        this.#inspectors(part, part.second, ' from the empty line after the fields that follow it');
      }
      if (this.found) return;
    }
    for (const { inspector, reading } of part.inspectors!) {
      inspector.push(bytes);
      await inspector.room();
      if (inspector.sniffed && inspector.sniffVerdict) return this.#judged(part, inspector, inspector.sniffVerdict, reading);
    }
    const declared = part.inspectors![0]!.inspector;
    if (!part.rawBinary && declared.sniffed && isRaw(this.#nodeOf(part).encoding) && BINARY_KINDS.has(declared.kind ?? '')) part.rawBinary = true;
    if (part.nested) await part.nested.scanner.push(part.nested.decoder.push(bytes), this.#pacer ?? new Pacer());
    if (part.nested?.scanner.found) this.found = part.nested.scanner.found;
  }

  /** Starts reading the part's body as `node` declares it, as base64 and as raw bytes. */
  #inspectors(part: ScanPart, node: MimeNode, from: string): void {
    const declared = node.encoding === 'base64' ? 'base64' : node.encoding === 'quoted-printable' ? 'quoted-printable' : 'raw';
    const inspector = (decodeAs?: 'base64' | 'raw') => new PartInspector(node, this.#rules, this.#depth, { sniffAll: true, nestedMessages: false, decodeAs });
    const list = [{ inspector: inspector(), reading: `as declared (${declared})${from}` }];
    if (declared !== 'base64') list.push({ inspector: inspector('base64'), reading: `read as base64 (it declares ${declared})${from}` });
    if (declared !== 'raw') list.push({ inspector: inspector('raw'), reading: `read as raw bytes (it declares ${declared})${from}` });
    part.inspectors = [...(part.inspectors ?? []), ...list];
    if (node.contentType === 'message/rfc822' && !isRaw(node.encoding) && !part.nested) {
      if (this.#depth >= this.#rules.limits.maxDepth) {
        this.#judged(
          part,
          list[0]!.inspector,
          { rule: `attached message cannot be inspected safely: it is nested deeper than ${this.#rules.limits.maxDepth} message levels`, evidence: [] },
          'as declared',
        );
        return;
      }
      part.nested = {
        scanner: new OriginalScanner(this.#rules, this.#depth + 1, ` of the message attached as part ${part.index}${this.#where}`),
        decoder: bodyDecoder(node),
      };
    }
  }

  async #endPart(): Promise<void> {
    const part = this.#part;
    if (this.found) return;
    if (!part.headerDone) this.#startBody();
    for (const { inspector, reading } of part.inspectors ?? []) {
      const verdict = await inspector.end();
      if (verdict.rule) return this.#judged(part, inspector, verdict, reading);
    }
    if (part.nested) {
      const pacer = this.#pacer ?? new Pacer();
      await part.nested.scanner.push(part.nested.decoder.end(), pacer);
      if (!part.nested.scanner.found) await part.nested.scanner.end(pacer);
      if (part.nested.scanner.found) {
        this.found = part.nested.scanner.found;
        return;
      }
    }
    // The fields after the line that was not one, the header never ending: judged as the header they would make.
    if (part.lateFields.length > 0 && !part.second) this.#lateHeader(part, true);
  }

  #judged(part: ScanPart, inspector: PartInspector, verdict: PartVerdict, reading: string): void {
    const node = part.node;
    this.found ??= {
      fileName: visible(inspector.names[0]?.normalised || (node && node.filename) || (node && node.contentType) || 'unnamed part'),
      contentType: (node && node.contentType) || 'application/octet-stream',
      where: `${part.index === 0 ? 'the body' : `part ${part.index}`}${this.#where}`,
      rule: verdict.rule ?? '',
      evidence: [...verdict.evidence, `judged ${reading}`],
    };
  }

  #uninspectable(what: string): void {
    const part = this.#part;
    this.found ??= {
      fileName: 'unnamed part',
      contentType: 'application/octet-stream',
      where: `${part.index === 0 ? 'the message header' : `the header of part ${part.index}`}${this.#where}`,
      rule: `the original cannot be inspected safely: ${what}`,
      evidence: [],
    };
  }
}

/** Stands in the held header for a line too long to hold. */
const TOO_LONG = Buffer.alloc(0);
/** Stands in the held header for lines left out past the hold: what folds after it is not kept either. */
const LEFT_OUT = Buffer.alloc(0);

/**
 * Keeps a header line (a copy) in `lines`, which hold `bytes` so far, and gives the new count.
 * Past {@link HEADER_HOLD} only Content-* fields and their folded lines are kept, up to
 * {@link CONTENT_FIELDS_BEYOND_HOLD} more: the names and encodings are what the scan reads.
 */
function holdLine(lines: Buffer[], bytes: number, line: Buffer): number {
  if (bytes + line.length > HEADER_HOLD) {
    const continuation = line[0] === 0x20 || line[0] === 0x09;
    const last = lines[lines.length - 1];
    const content = continuation
      ? last !== undefined && last !== LEFT_OUT && last !== TOO_LONG && CONTENT_FIELD.test(last.toString('latin1', 0, 64))
      : CONTENT_FIELD.test(line.toString('latin1', 0, 64));
    if (!content || bytes + line.length > HEADER_HOLD + CONTENT_FIELDS_BEYOND_HOLD) {
      if (last !== LEFT_OUT) lines.push(LEFT_OUT);
      return bytes;
    }
  }
  lines.push(Buffer.from(line));
  return bytes + line.length;
}

/** The boundary token of a line that looks like a boundary line (`--token` or `--token--`, then blanks), or undefined. */
function delimiterToken(line: Buffer, start = 0, lineEnd = line.length): { token: string; closing: boolean } | undefined {
  const from = line[start] === 0x0d ? start + 1 : start;
  if (line[from] !== DASH || line[from + 1] !== DASH || lineEnd - start > DELIMITER_LINE_MAX) return undefined;
  let end = lineEnd;
  while (end > from + 2 && (line[end - 1] === LF || line[end - 1] === 0x0d || line[end - 1] === 0x20 || line[end - 1] === 0x09)) end--;
  const rest = line.toString('latin1', from + 2, end);
  if (rest.length === 0) return undefined;
  // A line is an opening line of its whole token first (a boundary may itself end in "--").
  return rest.endsWith('--') && rest.length > 2 ? { token: rest.slice(0, -2), closing: true } : { token: rest, closing: false };
}

/** Content-* fields of header lines, folded lines joined: name, text and size. */
function contentFields(lines: readonly Buffer[]): { name: string; text: string; bytes: number }[] {
  const fields: { name: string; text: string; bytes: number }[] = [];
  let current: { name: string; text: string; bytes: number } | undefined;
  for (const line of lines) {
    if (line[0] === 0x20 || line[0] === 0x09) {
      if (current) {
        current.bytes += line.length;
        if (current.bytes <= MAX_CONTENT_FIELD) current.text += line.toString('latin1');
      }
      continue;
    }
    const head = line.toString('latin1', 0, 64);
    current = CONTENT_FIELD.test(head)
      ? { name: head.slice(0, head.indexOf(':')).trim(), text: line.toString('latin1', 0, MAX_CONTENT_FIELD + 1), bytes: line.length }
      : undefined;
    if (current) fields.push(current);
  }
  return fields;
}

function isEmptyLine(line: Buffer): boolean {
  return (line.length === 1 && line[0] === LF) || (line.length === 2 && line[0] === 0x0d && line[1] === LF);
}

function isBlank(bytes: Buffer, start = 0, end = bytes.length): boolean {
  for (let i = start; i < end; i++) {
    const b = bytes[i];
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d && b !== LF) return false;
  }
  return true;
}

/** Whether a transfer encoding leaves the bytes as they are (7bit, 8bit, binary, none or unknown). */
function isRaw(encoding: string | false | undefined): boolean {
  return encoding !== 'base64' && encoding !== 'quoted-printable';
}
