/**
 * Checks on the bytes of DATA before ingest sees them, in one pass: line endings (SMTP
 * smuggling) and the hop count, with each chunk's size reported for the session's minimum data
 * rate. A refusal fails the stream with an SMTP reply; ingest then refuses the message as is.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { errors, type MailgateError } from '../../lib/errors.js';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export interface DataGuardOptions {
  /**
   * Bare LF and bare CR inside DATA (CVE-2023-51764 class, "SMTP smuggling"): a server that
   * takes `\n.\r\n` or `\r.\r` as the end of a message can be made to see two messages where
   * the client sent one. smtp-server only ends DATA at `\r\n.\r\n`, but passes the rest
   * through; they are refused (`reject`) or turned into CRLF (`normalize`, Postfix's default
   * since 3.9), so nothing ambiguous is stored or sent on downstream.
   */
  bareLineEndings: 'reject' | 'normalize';
  /**
   * Received fields allowed in the header block; one more refuses the message (RFC 5321
   * section 6.3: a mail loop; Postfix's `hopcount_limit`, 554 5.4.6).
   */
  maxReceivedHeaders: number;
  /** Told the size of each chunk as it arrives. */
  onBytes?: (bytes: number) => void;
}

export class DataGuard extends Transform {
  readonly #opts: DataGuardOptions;
  #pendingCr = false;
  #inHeader = true;
  /** The start (16 characters at most) of the header line being read. */
  #line = '';
  #hops = 0;

  constructor(opts: DataGuardOptions) {
    super();
    this.#opts = opts;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#opts.onBytes?.(chunk.length);
    const refused = this.#inHeader ? this.#countHops(chunk) : undefined;
    if (refused) return done(refused);
    const out: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.#pendingCr) {
      // A CR ended the last chunk: it was bare unless this one starts with LF.
      this.#pendingCr = false;
      if (chunk[0] === LF) {
        out.push(CRLF);
        start = i = 1;
      } else if (this.#opts.bareLineEndings === 'reject') return done(errors.bareLineEnding('CR'));
      else out.push(CRLF);
    }
    // Jump from line ending to line ending (memchr), not byte by byte: most chunks have only CRLF pairs.
    let lf = chunk.indexOf(LF, i);
    let cr = chunk.indexOf(CR, i);
    while (lf >= 0 || cr >= 0) {
      if (lf >= 0 && (cr < 0 || lf < cr)) {
        // An LF with no CR before it: bare (a CR's own LF is skipped below).
        if (this.#opts.bareLineEndings === 'reject') return done(errors.bareLineEnding('LF'));
        out.push(chunk.subarray(start, lf), CRLF);
        start = lf + 1;
        lf = chunk.indexOf(LF, lf + 1);
        continue;
      }
      // A CR: with its LF it is a line ending as it should be.
      if (cr + 1 === chunk.length) {
        out.push(chunk.subarray(start, cr));
        this.#pendingCr = true;
        start = cr + 1;
      } else if (chunk[cr + 1] === LF) {
        if (lf === cr + 1) lf = chunk.indexOf(LF, lf + 1);
      } else {
        if (this.#opts.bareLineEndings === 'reject') return done(errors.bareLineEnding('CR'));
        out.push(chunk.subarray(start, cr), CRLF);
        start = cr + 1;
      }
      cr = chunk.indexOf(CR, cr + 1);
    }
    if (start === 0 && out.length === 0) return done(null, chunk);
    out.push(chunk.subarray(start));
    done(null, Buffer.concat(out));
  }

  override _flush(done: TransformCallback): void {
    if (this.#pendingCr) {
      if (this.#opts.bareLineEndings === 'reject') return done(errors.bareLineEnding('CR'));
      this.push(CRLF);
    }
    done();
  }

  /** Counts Received fields up to the end of the header block; the body is not read. */
  #countHops(chunk: Buffer): MailgateError | undefined {
    for (let i = 0; i < chunk.length && this.#inHeader; i++) {
      const b = chunk[i]!;
      if (b !== LF) {
        if (this.#line.length < 16) this.#line += String.fromCharCode(b);
        continue;
      }
      const line = this.#line.replace(/\r$/, '');
      this.#line = '';
      if (line === '') this.#inHeader = false;
      else if (/^received\s*:/i.test(line) && ++this.#hops > this.#opts.maxReceivedHeaders) {
        return errors.tooManyHops(this.#opts.maxReceivedHeaders);
      }
    }
    return undefined;
  }
}

/**
 * The DATA stream as ingest gets it. When the guard refuses, the error reaches the stream
 * ingest reads and smtp-server's stream is drained, so the session can still answer; when the
 * connection is lost mid-DATA, ingest hears of it (a pipe passes on an end, not a loss).
 */
export function guardedData(stream: NodeJS.ReadableStream, opts: DataGuardOptions): Transform {
  const guard = new DataGuard(opts);
  guard.once('error', () => {
    stream.unpipe();
    stream.resume();
  });
  let ended = false;
  stream.once('end', () => (ended = true));
  stream.once('close', () => {
    if (!ended && !guard.destroyed) guard.destroy(errors.clientGone());
  });
  stream.pipe(guard);
  return guard;
}
