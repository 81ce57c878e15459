/**
 * The pipeline's MIME splitter: mailsplit's Splitter, with two things done around it.
 *
 * - Each write is read through the Content-Type/Content-Disposition size check first
 *   (content-field-guard.ts), as a ContentFieldGuard stream in front of it would, without a
 *   stream hop of its own for every chunk.
 * - The body of a leaf part is handed on without the splitter reading it byte by byte.
 *   mailsplit looks for line ends one byte at a time in JavaScript and cuts every line out
 *   (a Buffer per 76-character base64 line) to compare it with the boundaries: over a third of
 *   the pipeline's time on the fetch bench mailbox. Only a line starting with `--` can be a
 *   delimiter (after the line end mailsplit keeps in front of it; see startsDelimiter), so the
 *   lines up to the next such line are found by a native search and passed on as one body
 *   chunk. The splitter is then left exactly as if its write had ended there (the last line
 *   end kept back as its pending line, as it keeps it), so it goes on as it would with a
 *   message that arrived in those pieces: the bytes and their kinds are what mailsplit gives,
 *   only cut into chunks at other places.
 *
 * The second relies on the splitter's state fields (`state`, `node`, the pending line), read
 * only between its writes; they are mailsplit's own, see @zone-eu/mailsplit
 * lib/message-splitter.js. test/splitter.test.ts holds the output to plain mailsplit's.
 */
import type { TransformCallback } from 'node:stream';
import { Splitter, type MimeNode } from '@zone-eu/mailsplit';
import { ContentFieldCheck } from './content-field-guard.js';

const LF = 0x0a;
const CR = 0x0d;
const DASH = 0x2d;
// mailsplit's state while it reads a body (lib/message-splitter.js BODY).
const BODY = 0x02;
/** A leaf body shorter than this is left to the splitter: not worth a write of its own. */
const MIN_BODY = 2048;
/**
 * Bytes a write to the splitter takes at least, when it is not a body handed on: enough for
 * a part's header block, cut after a line end so that the body after it can be handed on.
 */
const MIN_PIECE = 4096;
const DELIMITER = Buffer.from('\n--', 'latin1');
const CR_DELIMITER = Buffer.from('\n\r--', 'latin1');
const BLANK_LINE = Buffer.from('\n\n', 'latin1');
const CRLF_BLANK_LINE = Buffer.from('\n\r\n', 'latin1');

/** What of mailsplit's Splitter is read and set here between its writes. */
interface SplitterState {
  state: number;
  node: MimeNode & { _boundary?: Buffer | false; _parentBoundaryOwner?: { _boundary?: Buffer | false } };
  hasFailed: boolean;
  pendingLineTruncated: boolean;
  lineChunks: Buffer[];
  lineLength: number;
  appendPendingLine(chunk: Buffer): void;
}

/**
 * Whether this mailsplit has the state fields the body fast path reads and sets. A version
 * without them gets no fast path, only slower splitting: nothing is read from a field that is
 * not there (test/splitter.test.ts says so, so an upgrade that drops it is seen).
 */
export const bodyFastPath = (() => {
  const s = new Splitter() as unknown as Partial<SplitterState>;
  return (
    typeof s.state === 'number' &&
    typeof s.hasFailed === 'boolean' &&
    typeof s.pendingLineTruncated === 'boolean' &&
    Array.isArray(s.lineChunks) &&
    typeof s.lineLength === 'number' &&
    typeof s.appendPendingLine === 'function' &&
    'node' in s
  );
})();

/** See the module comment. */
export class PipelineSplitter extends Splitter {
  readonly #check = new ContentFieldCheck();

  override _transform(chunk: Buffer, encoding: BufferEncoding, done: TransformCallback): void {
    const err = this.#check.check(chunk);
    if (err) done(err);
    else this.#feed(chunk, encoding, done);
  }

  #feed(chunk: Buffer, encoding: BufferEncoding, done: TransformCallback): void {
    for (;;) {
      if (chunk.length === 0) return done();
      const body = this.#leafBody(chunk);
      if (body === 0) break;
      chunk = chunk.subarray(body);
    }
    const cut = pieceEnd(chunk);
    const rest = chunk.subarray(cut);
    super._transform(chunk.subarray(0, cut), encoding, (err?: Error | null) => {
      if (err) done(err);
      else this.#feed(rest, encoding, done);
    });
  }

  /**
   * Hands on the lines at the start of `chunk` that are body lines of the current leaf part,
   * when there are enough of them; how many bytes that took (0: none, the splitter reads on).
   */
  #leafBody(chunk: Buffer): number {
    const s = this as unknown as SplitterState;
    const node = s.node;
    if (!bodyFastPath || s.hasFailed || s.state !== BODY || !node || node.multipart || s.pendingLineTruncated) return 0;
    // The pending line must be only a line end (what the splitter keeps back of a body).
    const pending = s.lineLength === 0 ? undefined : s.lineChunks.length === 1 ? s.lineChunks[0]! : Buffer.concat(s.lineChunks);
    if (pending && (pending.length > 2 || pending.some((b) => b !== CR && b !== LF))) return 0;
    const bounded = Boolean(node._boundary) || Boolean(node._parentBoundaryOwner);
    let end: number;
    if (!bounded) end = chunk.lastIndexOf(LF) + 1;
    else {
      const firstLf = chunk.indexOf(LF);
      if (firstLf < 0) return 0;
      const head = pending ? Buffer.concat([pending, chunk.subarray(0, 4)]) : chunk.subarray(0, 4);
      if (startsDelimiter(head)) return 0;
      const a = chunk.indexOf(DELIMITER);
      const b = chunk.indexOf(CR_DELIMITER);
      const next = a < 0 ? b : b < 0 ? a : Math.min(a, b);
      // Up to two lines before the one that may be a delimiter. mailsplit reads the first line
      // of a write joined to the line end it kept back, and the second with the first one's
      // line end in front ("\r--b" alone is a delimiter, "\r\n\r--b" is not): two ordinary
      // lines read the same either way.
      end = next < 0 ? chunk.lastIndexOf(LF) + 1 : lineBefore(chunk, lineBefore(chunk, next + 1));
    }
    if (end < MIN_BODY) return 0;
    // The last line end stays with the splitter, as mailsplit keeps it, for the delimiter
    // after it (mailsplit's trimBodyLineEnd: only in a part with a parent).
    let value = end;
    if (node.parentNode) {
      if (chunk[value - 1] === LF) value--;
      if (chunk[value - 1] === CR) value--;
    }
    if (pending) {
      s.lineChunks = [];
      s.lineLength = 0;
      this.push({ node, type: 'body', value: pending });
    }
    this.push({ node, type: 'body', value: chunk.subarray(0, value) });
    if (value < end) s.appendPendingLine(chunk.subarray(value, end));
    return end;
  }
}

/** Whether a line (with the line end kept in front of it) starts as mailsplit's checkBoundary looks for a delimiter. */
function startsDelimiter(line: Buffer): boolean {
  let start = 0;
  if (line[0] === CR || line[0] === LF) start = line[0] === CR && line[1] === LF ? 2 : 1;
  return line[start] === DASH && line[start + 1] === DASH;
}

/** Where the splitter's next write ends: after the first blank line (a header block's end) or MIN_PIECE bytes, at a line end. */
function pieceEnd(chunk: Buffer): number {
  const a = chunk.indexOf(CRLF_BLANK_LINE);
  const b = chunk.indexOf(BLANK_LINE);
  const blank = a < 0 ? (b < 0 ? -1 : b + 2) : b < 0 ? a + 3 : Math.min(a + 3, b + 2);
  let lf = chunk.indexOf(LF, Math.max(blank, MIN_PIECE) - 1);
  // Not where either of the next two lines starts with CR: read with a line end in front, as
  // the first two lines of a write can be, it would read otherwise (see leafBody).
  while (lf >= 0 && !ordinaryStart(chunk, lf + 1)) lf = chunk.indexOf(LF, lf + 1);
  // A rest too short to be handed on goes in the same write: a write more is a turn of the event loop more.
  return lf < 0 || chunk.length - lf - 1 < MIN_BODY ? chunk.length : lf + 1;
}

function ordinaryStart(chunk: Buffer, at: number): boolean {
  if (chunk[at] === CR) return false;
  const lf = chunk.indexOf(LF, at);
  return lf >= 0 && lf + 1 < chunk.length && chunk[lf + 1] !== CR;
}

/** Where the line before the one starting at `at` starts (0 when none). */
function lineBefore(chunk: Buffer, at: number): number {
  return at < 2 ? 0 : chunk.lastIndexOf(LF, at - 2) + 1;
}
