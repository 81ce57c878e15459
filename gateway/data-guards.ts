/**
 * Checks on the bytes of DATA before ingest sees them: line endings (SMTP smuggling) and the
 * hop count. Each fails its stream with an SMTP reply; ingest then refuses the message as is.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { errors, MailgateError } from './errors.js';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

/**
 * Bare LF and bare CR inside DATA (CVE-2023-51764 class, "SMTP smuggling"): a server that
 * takes `\n.\r\n` or `\r.\r` as the end of a message can be made to see two messages where
 * the client sent one. smtp-server only ends DATA at `\r\n.\r\n`, but passes the rest through;
 * here they are refused (`reject`) or turned into CRLF (`normalize`, Postfix's default since
 * 3.9), so nothing ambiguous is stored or sent on downstream.
 */
export class LineEndingGuard extends Transform {
  #pendingCr = false;
  readonly #mode: 'reject' | 'normalize';

  constructor(mode: 'reject' | 'normalize') {
    super();
    this.#mode = mode;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const out: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.#pendingCr) {
      // A CR ended the last chunk: it was bare unless this one starts with LF.
      this.#pendingCr = false;
      if (chunk[0] === LF) {
        out.push(CRLF);
        start = i = 1;
      } else if (this.#mode === 'reject') return done(bareEnding('CR'));
      else out.push(CRLF);
    }
    for (; i < chunk.length; i++) {
      const b = chunk[i];
      if (b === LF) {
        // CRLF pairs inside the chunk are passed as they are.
        if (i > 0 && chunk[i - 1] === CR) continue;
        if (this.#mode === 'reject') return done(bareEnding('LF'));
        out.push(chunk.subarray(start, i), CRLF);
        start = i + 1;
      } else if (b === CR) {
        if (i + 1 === chunk.length) {
          out.push(chunk.subarray(start, i));
          this.#pendingCr = true;
          start = i + 1;
        } else if (chunk[i + 1] !== LF) {
          if (this.#mode === 'reject') return done(bareEnding('CR'));
          out.push(chunk.subarray(start, i), CRLF);
          start = i + 1;
        }
      }
    }
    if (start === 0 && out.length === 0) return done(null, chunk);
    out.push(chunk.subarray(start));
    done(null, Buffer.concat(out));
  }

  override _flush(done: TransformCallback): void {
    if (this.#pendingCr) {
      if (this.#mode === 'reject') return done(bareEnding('CR'));
      this.push(CRLF);
    }
    done();
  }
}

function bareEnding(what: 'LF' | 'CR'): MailgateError {
  return new MailgateError('BARE_LINE_ENDING', 554, '5.5.2', `Message refused: bare ${what} in the message text; lines must end in CRLF (SMTP smuggling protection)`);
}

/**
 * Counts `Received:` fields in the header block and refuses the message past `limit` (RFC 5321
 * section 6.3: a message going round in a loop; Postfix's `hopcount_limit`, 554 5.4.6). Reads
 * only the header block; the body passes untouched.
 */
export class HopCountGuard extends Transform {
  #inHeader = true;
  #line = '';
  #count = 0;
  readonly #limit: number;

  constructor(limit: number) {
    super();
    this.#limit = limit;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (!this.#inHeader) return done(null, chunk);
    for (let i = 0; i < chunk.length && this.#inHeader; i++) {
      const b = chunk[i]!;
      if (b === LF) {
        const line = this.#line.replace(/\r$/, '');
        if (line === '') this.#inHeader = false;
        else if (/^received\s*:/i.test(line) && ++this.#count > this.#limit) {
          return done(new MailgateError('TOO_MANY_HOPS', 554, '5.4.6', `Too many hops: more than ${this.#limit} Received headers (a mail loop?)`));
        }
        this.#line = '';
        continue;
      }
      // Only the start of each line matters: keep at most the first 16 characters.
      if (this.#line.length < 16) this.#line += String.fromCharCode(b);
    }
    done(null, chunk);
  }
}

/**
 * The DATA stream as ingest gets it: `counter` (the session guard's byte count), the hop
 * count, then line endings. When a guard refuses, the error reaches the stream ingest reads
 * and smtp-server's stream is drained, so the session can still answer.
 */
export function guardedData(stream: NodeJS.ReadableStream, counter: Transform, limits: { max_received_headers: number; bare_line_endings: 'normalize' | 'reject' }): Transform {
  const hops = new HopCountGuard(limits.max_received_headers);
  const endings = new LineEndingGuard(limits.bare_line_endings);
  const refuse = (err: Error) => {
    stream.unpipe();
    stream.resume();
    if (!endings.destroyed) endings.destroy(err);
  };
  counter.once('error', refuse);
  hops.once('error', refuse);
  // A pipe passes on the end of its source, not its loss: a connection cut mid-DATA must reach ingest.
  let ended = false;
  stream.once('end', () => (ended = true));
  stream.once('close', () => {
    if (!ended && !endings.destroyed) endings.destroy(errors.clientGone());
  });
  stream.pipe(counter).pipe(hops).pipe(endings);
  return endings;
}
