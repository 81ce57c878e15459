/**
 * The checks that decide whether a message can be parsed, done on mailsplit chunks as they
 * stream past: header sections when a node arrives, multipart structure at the end. Nothing
 * is buffered beyond what mailsplit already holds (one header section at a time).
 */
import type { MimeNode, SplitterChunk } from '@zone-eu/mailsplit';
import type { MessageContext } from '../chain/stage.js';
import { printable, unparsableReasons, UnparsableMessage } from './unparsable.js';
import { decodedHead } from './header-text.js';
import { ChunkStage } from '../chain/stage-chain.js';

/** The limits a message must stay within to count as parsable. */
export interface MimeLimits {
  /** Largest header section of one MIME node, in bytes. */
  maxHeaderSize: number;
  /** Longest header line in octets, line end excluded (RFC 5322 2.1.1: 998). */
  maxHeaderLine: number;
  /** Most MIME parts below the top-level message. */
  maxParts: number;
  /** Deepest nesting of MIME parts; the message itself is depth 0. */
  maxDepth: number;
}

/** Defaults: mailsplit's maxHeadSize, RFC 5322's line limit, mailsplit/Haraka's 1000 parts. */
export const defaultMimeLimits: Readonly<MimeLimits> = { maxHeaderSize: 1024 * 1024, maxHeaderLine: 998, maxParts: 1000, maxDepth: 50 };

/** Subject markers that make a message fail on purpose (Emplifi seed: PCEmail Quarantine Test). */
export const quarantineTestMarkers = ['[mailgate quarantine test message]', '[pcemail quarantine test message]'] as const;

// RFC 5322 3.6.8 field name (printable ASCII but ':'); obs-field allows blanks before the colon.
const FIELD_LINE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * What is wrong with one raw header section, or undefined when nothing is. `where` names it for
 * the admin ("the message header", "the header of part 1.2"); with `root` the first line may be
 * an mbox `From ` line. A section without its empty line is fine if every line is a field: the
 * body is optional (RFC 5322 3.5), and a part may end right after its header.
 */
export function headerProblem(
  raw: Buffer,
  limits: Pick<MimeLimits, 'maxHeaderSize' | 'maxHeaderLine'>,
  where: string,
  root = true,
): UnparsableMessage | undefined {
  const cost = headerCost(raw);
  if (cost > limits.maxHeaderSize) {
    const counted = cost > raw.length ? ` (${cost} counting each line as at least ${HEADER_LINE_MIN_COST} bytes)` : '';
    return new UnparsableMessage('header_too_large', `${cap(where)} is ${raw.length} bytes${counted}, over the limit of ${limits.maxHeaderSize}`);
  }
  const nul = raw.indexOf(0);
  if (nul >= 0) return new UnparsableMessage('header_nul', `${cap(where)} has a NUL byte at offset ${nul}`);
  if (hasHighBytes(raw)) {
    try {
      utf8.decode(raw);
    } catch {
      return new UnparsableMessage('header_undecodable', `${cap(where)} has bytes that are neither ASCII nor UTF-8`);
    }
  }
  let lineNo = 0;
  let start = 0;
  while (start < raw.length) {
    let end = raw.indexOf(0x0a, start);
    const next = end < 0 ? raw.length : end + 1;
    if (end < 0) end = raw.length;
    const contentEnd = end > start && raw[end - 1] === 0x0d ? end - 1 : end;
    lineNo++;
    const length = contentEnd - start;
    if (length > limits.maxHeaderLine) {
      return new UnparsableMessage('header_line_too_long', `Line ${lineNo} of ${where} is ${length} octets, over the limit of ${limits.maxHeaderLine}`);
    }
    if (length === 0) break; // the empty line that ends the section
    const first = raw[start];
    if (first !== 0x20 && first !== 0x09) {
      const line = raw.toString('latin1', start, Math.min(contentEnd, start + 200));
      const mbox = root && lineNo === 1 && line.startsWith('From ');
      if (!mbox && !FIELD_LINE.test(line)) {
        return new UnparsableMessage(
          'header_no_end',
          `Line ${lineNo} of ${where} is not a header field (${JSON.stringify(printable(line, 60))}): the empty line that ends the header section is missing`,
        );
      }
    }
    start = next;
  }
  return undefined;
}

// mailsplit counts every header line as at least this many bytes against its maxHeadSize (a
// parsed line costs a fixed overhead on top of its bytes).
const HEADER_LINE_MIN_COST = 64;

/**
 * What a header section counts for against a header size limit, counted as the MIME splitter
 * counts it: each line at least 64 bytes, up to and including the empty line that ends the
 * section. Judging by bytes alone passed 20000 short `To:` lines that the splitter then
 * refused, and copied them into a wrapping message the splitter refused in turn (451, retried
 * for ever).
 */
export function headerCost(raw: Buffer): number {
  let cost = 0;
  for (let start = 0; start < raw.length;) {
    const lf = raw.indexOf(0x0a, start);
    const end = lf < 0 ? raw.length : lf + 1;
    const length = end - start;
    if (lf >= 0 && (length === 1 || (length === 2 && raw[start] === 0x0d))) return cost + length; // the empty line
    cost += Math.max(length, HEADER_LINE_MIN_COST);
    start = end;
  }
  return cost;
}

/** The quarantine test marker in a (raw) Subject value, or undefined. */
export function quarantineMarker(subject: string): string | undefined {
  // The start of a huge subject only (header-text.ts); undecodable words are read as they are.
  const lower = decodedHead(subject).toLowerCase();
  return quarantineTestMarkers.find((m) => lower.includes(m));
}

interface MultipartState {
  node: MimeNode;
  /** Where it is, for the admin ("part 1.2"). */
  where: string;
  /** `--boundary--`, the closing delimiter (RFC 2046 5.1.1). */
  closing: Buffer;
  parts: number;
  closed: boolean;
}

// What a delimiter line may carry besides `--boundary--`: up to 998 blanks (mailsplit's
// bound, after RFC 2046 5.1.1's transport padding), CRs and the LF, a CR in front.
const DELIMITER_LINE_EXTRA = 998 + 8;

/** Counts of what the checker saw, for the findings of a message that passed. */
export interface MimeCheckResult {
  parts: number;
  depth: number;
}

/**
 * Passes mailsplit chunks through unchanged and fails with UnparsableMessage as soon as one of
 * the checks fails: header sections when their node arrives, the part count and depth per node,
 * multipart boundaries at the end. Runs first, so it sees the headers exactly as received.
 */
export class MimeChecker extends ChunkStage {
  readonly result: MimeCheckResult = { parts: 0, depth: 0 };
  readonly #limits: MimeLimits;
  readonly #quarantineTest: boolean;
  readonly #wrapUnterminated: boolean;
  readonly #depth = new WeakMap<object, number>();
  readonly #names = new WeakMap<object, string>();
  readonly #multiparts = new Map<object, MultipartState>();
  /** The part the last opening delimiter announced, until its node arrives. */
  #announced: MimeNode | undefined;
  /** The start of a multipart data line whose end has not arrived yet (a delimiter cut across chunks). */
  #line: Buffer[] = [];
  #lineBytes = 0;
  /** The node of the last data chunk, which the line in {@link #line} belongs to. */
  #lastDataNode: MimeNode | undefined;
  /** The current data line is longer than any delimiter line: not one. */
  #lineTooLong = false;
  /** The longest closing delimiter of the multiparts seen, for bounding {@link #line}. */
  #longestClosing = 0;
  /** Set by the stage to record findings: called once, with the failure or with none when the message passed. */
  onDone?: (failure?: UnparsableMessage) => void;

  constructor(limits: MimeLimits, opts: { quarantineTest: boolean; wrapUnterminated: boolean }) {
    super();
    this.#limits = limits;
    this.#quarantineTest = opts.quarantineTest;
    this.#wrapUnterminated = opts.wrapUnterminated;
  }

  protected transform(chunk: SplitterChunk): void {
    try {
      if (chunk.type === 'node') this.#onNode(chunk);
      else if (chunk.type === 'data') this.#onData(chunk.node, chunk.value);
      // A delimiter line is never cut by a part's node or body: a partial line before one is not a delimiter.
      if (chunk.type !== 'data') this.#dropLine();
    } catch (err) {
      throw this.#fail(err);
    }
    this.push(chunk);
  }

  protected override flush(): void {
    // Only a closing delimiter may end the input without a line end (as mailsplit reads it).
    try {
      if (this.#lineBytes > 0 && !this.#lineTooLong && this.#lastDataNode) this.#closingLine(this.#lastDataNode, Buffer.concat(this.#line, this.#lineBytes));
    } catch (err) {
      throw this.#fail(err);
    }
    for (const state of this.#multiparts.values()) {
      if (state.closed || (state.parts > 0 && !this.#wrapUnterminated)) continue;
      const boundary = JSON.stringify(printable(state.closing.subarray(2, -2).toString('latin1'), 80));
      const err =
        state.parts === 0
          ? new UnparsableMessage('boundary_missing', `The boundary ${boundary} of ${state.where} never appears in its body`)
          : new UnparsableMessage(
              'boundary_unterminated',
              `The multipart ${state.where} never reaches its closing boundary ${boundary} (${state.parts} part(s) seen)`,
            );
      throw this.#fail(err);
    }
    this.onDone?.();
  }

  #fail(err: unknown): Error {
    const failure =
      err instanceof UnparsableMessage ? err : new UnparsableMessage('parser_exception', `the wrapping checks failed: ${String(err)}`, { cause: err });
    this.onDone?.(failure);
    return failure;
  }

  #onNode(node: MimeNode): void {
    const parent = node.parentNode || undefined;
    const depth = parent ? (this.#depth.get(parent) ?? 0) + 1 : 0;
    this.#depth.set(node, depth);
    const where = this.#nameOf(node, parent);
    if (parent) {
      this.result.parts++;
      if (this.result.parts > this.#limits.maxParts) {
        throw new UnparsableMessage('too_many_parts', `The message has more than ${this.#limits.maxParts} MIME parts`);
      }
      const owner = this.#multiparts.get(parent);
      if (owner) owner.parts++;
    }
    if (depth > this.result.depth) this.result.depth = depth;
    if (depth > this.#limits.maxDepth) {
      throw new UnparsableMessage('nesting_too_deep', `${cap(where)} is nested ${depth} deep, over the limit of ${this.#limits.maxDepth}`);
    }
    const raw = node.getHeaders();
    const isMessage = !parent;
    const problem = headerProblem(raw, this.#limits, isMessage ? 'the message header' : `the header of ${where}`, isMessage);
    // A header section that runs to the end of the input is fine when every line is a field
    // (RFC 5322 3.5: the body is optional); the field check is what catches a missing end.
    if (problem) throw problem;
    if (node.multipart) {
      if (!node._boundary) {
        throw new UnparsableMessage('boundary_missing', `${cap(where)} is multipart/${printable(node.multipart, 40)} without a usable boundary parameter`);
      }
      const closing = Buffer.concat([Buffer.from('--'), node._boundary, Buffer.from('--')]);
      this.#multiparts.set(node, { node, where, closing, parts: 0, closed: false });
      this.#longestClosing = Math.max(this.#longestClosing, closing.length);
    }
    if (isMessage && this.#quarantineTest && node.headers) {
      const marker = quarantineMarker(node.headers.getFirst('subject'));
      if (marker) throw new UnparsableMessage('quarantine_test', `The subject holds the quarantine test marker ${marker}; the message is wrapped on purpose`);
    }
  }

  // Delimiter lines come as `data` chunks, and so do a multipart's preamble and epilogue. A
  // delimiter that opens a part comes alone, as a chunk of the new part, before that part's
  // node. Closing delimiters do not come one to a chunk of the multipart they close: mailsplit
  // joins consecutive data lines into one chunk of the node that owns the first, so after a
  // nested multipart `--inner--` and `--outer--` arrive together as a chunk of the inner one
  // (Apple Mail's alternative/related, nodemailer's HTML with embedded images), and a line
  // may be cut across chunks. So every data line is read, and one that closes the chunk's
  // node or any multipart above it closes that multipart (RFC 2046 5.1.1).
  #onData(node: MimeNode, value: Buffer | undefined): void {
    if (!this.#depth.has(node)) {
      // mailsplit 5.4 drops a part whose header is cut off by the next delimiter (no empty
      // line between them): its node never arrives, and its header bytes would be lost.
      const announced = this.#announced;
      if (announced && announced !== node && !this.#depth.has(announced) && announced._headerlen > 0) {
        const parent = announced.parentNode || undefined;
        const where = parent ? (this.#multiparts.get(parent)?.where ?? 'the message') : 'the message';
        throw new UnparsableMessage('header_no_end', `A part of ${where} has a header with no end: a boundary line follows it directly`);
      }
      this.#announced = node;
      this.#dropLine();
      return;
    }
    if (!value || value.length === 0 || this.#multiparts.size === 0) return;
    this.#lastDataNode = node;
    let start = 0;
    for (let lf = value.indexOf(0x0a); lf >= 0; lf = value.indexOf(0x0a, start)) {
      if (!this.#lineTooLong && this.#fits(lf - start)) {
        const piece = value.subarray(start, lf);
        this.#closingLine(node, this.#lineBytes ? Buffer.concat([...this.#line, piece]) : piece);
      }
      this.#dropLine();
      start = lf + 1;
    }
    if (start < value.length && !this.#lineTooLong) {
      if (this.#fits(value.length - start)) {
        // Copied: the chunk's buffer is the splitter's, and is handed on.
        this.#line.push(Buffer.from(value.subarray(start)));
        this.#lineBytes += value.length - start;
      } else {
        this.#dropLine();
        this.#lineTooLong = true;
      }
    }
  }

  /** Whether the line held so far and `more` bytes can still be a delimiter line. */
  #fits(more: number): boolean {
    return this.#lineBytes + more <= this.#longestClosing + DELIMITER_LINE_EXTRA;
  }

  #dropLine(): void {
    this.#line = [];
    this.#lineBytes = 0;
    this.#lineTooLong = false;
  }

  /**
   * Closes the innermost open multipart, the chunk's node or one above it, whose closing
   * delimiter `line` is: `--boundary--`, then only blanks and CRs (the LF is already off).
   * mailsplit accepts a lone CR in front of a delimiter; so do we.
   */
  #closingLine(node: MimeNode, line: Buffer): void {
    const from = line[0] === 0x0d ? 1 : 0;
    if (line[from] !== 0x2d || line[from + 1] !== 0x2d) return;
    for (let owner: MimeNode | false = node; owner; owner = owner.parentNode) {
      const state = this.#multiparts.get(owner);
      if (!state || state.closed) continue;
      if (!line.subarray(from, from + state.closing.length).equals(state.closing)) continue;
      let i = from + state.closing.length;
      while (i < line.length && (line[i] === 0x20 || line[i] === 0x09)) i++;
      while (i < line.length && line[i] === 0x0d) i++;
      if (i === line.length) {
        state.closed = true;
        return;
      }
    }
  }

  // IMAP-style part numbers ("part 1.2"), so an admin can find the part in a mail client.
  #nameOf(node: MimeNode, parent: MimeNode | undefined): string {
    if (!parent) {
      this.#names.set(node, '');
      return 'the message';
    }
    const base = this.#names.get(parent) ?? '';
    const state = this.#multiparts.get(parent);
    const index = state ? state.parts + 1 : 1;
    const name = parent.multipart ? (base ? `${base}.${index}` : String(index)) : base || '1';
    this.#names.set(node, name);
    return `part ${name}`;
  }
}

function hasHighBytes(raw: Buffer): boolean {
  for (let i = 0; i < raw.length; i++) if (raw[i]! >= 0x80) return true;
  return false;
}

function cap(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The findings of the wrapping stage, for a message that passed or one that failed. */
export function wrappingFindings(ctx: MessageContext, result: MimeCheckResult, failure?: UnparsableMessage): void {
  if (failure) {
    const outcome = ctx.dryRun ? 'would be stored as a wrapping message' : 'is stored as a wrapping message';
    ctx.findings.wrapping = {
      summary: [
        `The message cannot be processed: ${unparsableReasons[failure.reason]} (${failure.reason}). ${failure.detail}. It ${outcome} with the original attached.`,
      ],
      reason: failure.reason,
      detail: failure.detail,
    };
    return;
  }
  ctx.findings.wrapping = {
    summary: [`The message parsed cleanly: ${result.parts} MIME part(s), nested ${result.depth} deep.`],
    parts: result.parts,
    depth: result.depth,
  };
}
