/**
 * Reading POP3 multi-line responses (RFC 1939 section 3) as they arrive: lines that begin
 * with the termination octet are byte-stuffed by the server, and the response ends with a
 * line holding a single ".". The decoder works chunk by chunk, so a message of any size
 * passes through without being buffered whole.
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/** Where the decoder stands between chunks. */
const enum State {
  /** At the first byte of a line. */
  LineStart,
  /** Inside a line. */
  InLine,
  /** A line began with "."; it was dropped (stuffing) unless the line turns out to be the terminator. */
  Dot,
  /** A line began with ".\r". */
  DotCr,
}

/** What one chunk gave: decoded pieces to pass on, and, once the terminator is seen, the bytes after it. */
export interface DotDecodeResult {
  /** Decoded bytes, as slices of the input chunk (no copy). */
  out: Buffer[];
  /** Null while the response goes on; the bytes that followed the terminating line once it is seen. */
  rest: Buffer | null;
}

/**
 * Removes dot-stuffing from a multi-line POP3 response and finds its end. Feed it the bytes
 * after the status line; it returns the decoded bytes with the line ends as the server sent
 * them. The terminating ".CRLF" (or a bare ".LF") is not part of the output.
 */
export class DotDecoder {
  #state: State = State.LineStart;
  #finished = false;

  /** True once the terminating line has been seen. */
  get done(): boolean {
    return this.#finished;
  }

  /** Decodes one chunk. After the terminator, further calls are an error. */
  write(chunk: Buffer): DotDecodeResult {
    if (this.#finished) throw new Error('DotDecoder: write after the terminating line');
    const out: Buffer[] = [];
    let pos = 0;
    // Start of the current run of bytes copied through unchanged.
    let runStart = 0;
    const flush = (end: number) => {
      if (end > runStart) out.push(chunk.subarray(runStart, end));
    };
    while (pos < chunk.length) {
      switch (this.#state) {
        case State.LineStart:
          if (chunk[pos] === DOT) {
            flush(pos);
            pos++;
            runStart = pos;
            this.#state = State.Dot;
          } else {
            this.#state = State.InLine;
          }
          break;
        case State.Dot: {
          const b = chunk[pos];
          if (b === CR) {
            this.#state = State.DotCr;
            pos++;
          } else if (b === LF) {
            // A bare ".LF" terminator: lenient towards servers that do not send CRLF.
            return this.#end(out, chunk, pos + 1);
          } else {
            // A stuffed line: the dot is gone, the rest of the line passes through.
            this.#state = State.InLine;
          }
          break;
        }
        case State.DotCr:
          if (chunk[pos] === LF) return this.#end(out, chunk, pos + 1);
          // ".\r" then something else: not the terminator. The CR may sit in an earlier chunk.
          if (pos === 0) out.push(Buffer.from([CR]));
          else runStart = pos - 1;
          this.#state = State.InLine;
          break;
        case State.InLine: {
          const nl = chunk.indexOf(LF, pos);
          if (nl < 0) {
            pos = chunk.length;
          } else {
            pos = nl + 1;
            this.#state = State.LineStart;
          }
          break;
        }
      }
    }
    // A chunk ending in ".\r" holds the CR back until the next byte decides.
    if (this.#state === State.DotCr) flush(chunk.length - 1);
    else flush(chunk.length);
    return { out, rest: null };
  }

  #end(out: Buffer[], chunk: Buffer, after: number): DotDecodeResult {
    this.#finished = true;
    return { out, rest: chunk.subarray(after) };
  }
}

/**
 * Splits received bytes into CRLF (or LF) terminated lines. Keeps the chunks as they came, so
 * answers that wait unread (pipelined RETRs while the caller stores the last message) are not
 * copied again with every chunk; refuses lines longer than `maxLine` so a broken server cannot
 * grow one without bound.
 */
export class LineBuffer {
  #chunks: Buffer[] = [];
  #bytes = 0;

  readonly #maxLine: number;

  constructor(maxLine: number) {
    this.#maxLine = maxLine;
  }

  /** Appends bytes received from the server. */
  push(chunk: Buffer): void {
    if (chunk.length > 0) this.#chunks.push(chunk);
    this.#bytes += chunk.length;
  }

  /** The bytes held, not yet read. */
  get size(): number {
    return this.#bytes;
  }

  /** The next complete line without its line end, or null. Throws when a line exceeds the limit. */
  shift(): Buffer | null {
    for (;;) {
      const first = this.#chunks[0];
      if (!first) return null;
      const nl = first.indexOf(LF);
      if (nl >= 0) {
        const end = nl > 0 && first[nl - 1] === CR ? nl - 1 : nl;
        const rest = first.subarray(nl + 1);
        if (rest.length > 0) this.#chunks[0] = rest;
        else this.#chunks.shift();
        this.#bytes -= nl + 1;
        return first.subarray(0, end);
      }
      if (first.length > this.#maxLine) throw new Error(`line longer than ${this.#maxLine} bytes`);
      const second = this.#chunks[1];
      if (!second) return null;
      // A line split across chunks: join just these two and look again.
      this.#chunks.splice(0, 2, Buffer.concat([first, second]));
    }
  }

  /** The next chunk not yet read as lines (for a multi-line decoder), or null. */
  take(): Buffer | null {
    const chunk = this.#chunks.shift() ?? null;
    if (chunk) this.#bytes -= chunk.length;
    return chunk;
  }

  /** Puts bytes back in front (what followed a multi-line response). */
  unshift(bytes: Buffer): void {
    if (bytes.length > 0) this.#chunks.unshift(bytes);
    this.#bytes += bytes.length;
  }

  /** Forgets everything buffered (after STLS: bytes sent in clear before the handshake must not be trusted, RFC 2595 section 4). */
  clear(): void {
    this.#chunks = [];
    this.#bytes = 0;
  }
}
