/**
 * Synchronous, incremental Content-Transfer-Encoding encoders for a masked text part: the
 * same bytes, line for line, as the encoder streams mailsplit's `node.getEncoder()` gives
 * (libbase64's and libqp's, lines of at most 76 characters), so a part re-encoded by function
 * calls reads exactly as one re-encoded through the streams did, without a stream per part.
 * Ported from libbase64 1.4.1 and libqp 3.0.1 (MIT, Andris Reinman); test/masking-transfer.test.ts
 * checks them against those streams.
 */

/** Encodes one part's body, chunk by chunk. */
export interface BodyEncoder {
  /** Encoded bytes for this chunk (may hold back a few bytes, or the current line, for the next). */
  push(bytes: Buffer): Buffer;
  /** Whatever was held back, at the end of the body. */
  end(): Buffer;
}

/** Line length of both encoders, as mailsplit leaves them (RFC 2045 6.7 rule 5, 6.8). */
const LINE = 76;
const empty = Buffer.alloc(0);

/** The encoder mailsplit's `getEncoder()` uses for the part's transfer encoding; anything but base64 and quoted-printable passes through. */
export function mailsplitBodyEncoder(encoding: string | false): BodyEncoder {
  switch (encoding) {
    case 'base64':
      return new Base64Encoder();
    case 'quoted-printable':
      return new QuotedPrintableEncoder();
    default:
      return { push: (bytes) => bytes, end: () => empty };
  }
}

/** Base64 in lines of 76 characters, CRLF between lines and none after the last (libbase64's Encoder). */
class Base64Encoder implements BodyEncoder {
  /** Input bytes short of a group of three. */
  #held: Buffer = empty;
  /** Encoded characters of the line not yet written: whether it gets a line break depends on what follows. */
  #line = '';

  push(bytes: Buffer): Buffer {
    if (!bytes.length) return empty;
    const all = this.#held.length ? Buffer.concat([this.#held, bytes]) : bytes;
    const whole = all.length - (all.length % 3);
    this.#held = Buffer.from(all.subarray(whole));
    return this.#lines(all.toString('base64', 0, whole), false);
  }

  end(): Buffer {
    const out = this.#lines(this.#held.length ? this.#held.toString('base64') : '', true);
    this.#held = empty;
    return out;
  }

  #lines(b64: string, final: boolean): Buffer {
    const text = this.#line + b64;
    if (!text.length) return empty;
    // The last line (full or not) waits for more, unless this is the end.
    const complete = Math.max(Math.ceil(text.length / LINE) - 1, 0);
    const rest = text.length - complete * LINE;
    const out = Buffer.allocUnsafe(complete * (LINE + 2) + (final ? rest : 0));
    let to = 0;
    for (let from = 0; from < complete * LINE; from += LINE) {
      to += out.write(text.slice(from, from + LINE), to, 'latin1');
      out[to++] = 0x0d;
      out[to++] = 0x0a;
    }
    if (final) {
      out.write(text.slice(complete * LINE), to, 'latin1');
      this.#line = '';
    } else {
      this.#line = text.slice(complete * LINE);
    }
    return out;
  }
}

/** Input is encoded and wrapped this many bytes at a time (libqp's ENCODE_SLICE_SIZE). */
const QP_SLICE = 64 * 1024;
/** 1 for each byte written as itself: TAB, LF, CR and printable ASCII but "=" (RFC 2045 6.7). */
const QP_LITERAL = Uint8Array.from({ length: 256 }, (_, i) => (i === 0x09 || i === 0x0a || i === 0x0d || (i >= 0x20 && i <= 0x7e && i !== 0x3d) ? 1 : 0));
const HEX = '0123456789ABCDEF';
const isBlank = (c: number | undefined) => c === 0x20 || c === 0x09;

/** Quoted-printable with soft line breaks at 76 characters (libqp's Encoder, not in binary mode). */
class QuotedPrintableEncoder implements BodyEncoder {
  /** The encoded line not yet written: where its soft break goes depends on what follows. */
  #line = '';
  /** A last blank held back until it is known whether a line end follows it. */
  #heldByte: number | undefined;
  /** The byte before the next one to encode. */
  #lastByte: number | undefined;

  push(bytes: Buffer): Buffer {
    if (!bytes.length) return empty;
    let out = '';
    if (this.#heldByte !== undefined) {
      out += this.#encodeSlices(Buffer.of(this.#heldByte), bytes[0]);
      this.#heldByte = undefined;
    }
    let buf = bytes;
    const last = buf[buf.length - 1];
    if (isBlank(last)) {
      this.#heldByte = last;
      buf = buf.subarray(0, buf.length - 1);
    }
    out += this.#encodeSlices(buf, this.#heldByte);
    return out ? Buffer.from(out, 'latin1') : empty;
  }

  end(): Buffer {
    let out = '';
    if (this.#heldByte !== undefined) {
      out += this.#encodeSlices(Buffer.of(this.#heldByte), undefined);
      this.#heldByte = undefined;
    }
    if (this.#line) {
      out += wrapQp(this.#line);
      this.#line = '';
    }
    return out ? Buffer.from(out, 'latin1') : empty;
  }

  #encodeSlices(buf: Buffer, next: number | undefined): string {
    let out = '';
    for (let start = 0; start < buf.length; start += QP_SLICE) {
      const end = Math.min(start + QP_SLICE, buf.length);
      let qp = this.#line + encodeQp(buf.subarray(start, end), end < buf.length ? buf[end] : next, this.#lastByte);
      this.#lastByte = buf[end - 1];
      // A CR at the end is a line break if LF follows: it is wrapped once that is known.
      const cr = qp.endsWith('\r') ? '\r' : '';
      qp = wrapQp(cr ? qp.slice(0, -1) : qp);
      const lastLF = qp.lastIndexOf('\n');
      this.#line = qp.slice(lastLF + 1) + cr;
      out += qp.slice(0, lastLF + 1);
    }
    return out;
  }
}

/**
 * Quoted-printable of bytes that sit between `previous` and `next` (undefined: a line start,
 * and the end of the input). A blank before a line end and a hyphen at a line start are
 * escaped: a line starting with two hyphens would read as a MIME boundary.
 */
function encodeQp(bytes: Buffer, next: number | undefined, previous: number | undefined): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < bytes.length; i++) {
    const ord = bytes[i]!;
    const preceding = i > 0 ? bytes[i - 1] : previous;
    const following = i + 1 < bytes.length ? bytes[i + 1] : next;
    if (
      QP_LITERAL[ord] &&
      !(isBlank(ord) && (following === undefined || following === 0x0a || following === 0x0d)) &&
      !(ord === 0x2d && (preceding === undefined || preceding === 0x0a || preceding === 0x0d))
    ) {
      continue;
    }
    out += bytes.toString('latin1', from, i) + '=' + HEX[ord >> 4] + HEX[ord & 15];
    from = i + 1;
  }
  return from === 0 ? bytes.toString('latin1') : out + bytes.toString('latin1', from);
}

/** Soft line breaks so that no line is longer than 76 characters (libqp's `wrap`). */
function wrapQp(str: string): string {
  if (str.length <= LINE) return str;
  // Every line is wrapped on its own; a line break does not count towards the length.
  const parts = str.split(/(\r?\n)/);
  for (let i = 0; i < parts.length; i += 2) parts[i] = wrapQpLine(parts[i]!);
  return parts.join('');
}

function wrapQpLine(str: string): string {
  const margin = Math.floor(LINE / 3);
  let pos = 0;
  let result = '';
  for (;;) {
    // A line started by a soft break must not begin with a hyphen either (see encodeQp).
    const escapeHyphen = pos > 0 && str.charCodeAt(pos) === 0x2d;
    if (str.length - pos + (escapeHyphen ? 2 : 0) <= LINE) {
      result += escapeHyphen ? '=2D' + str.slice(pos + 1) : str.slice(pos);
      break;
    }
    let line = escapeHyphen ? '=2D' + str.slice(pos + 1, pos + LINE - 2) : str.slice(pos, pos + LINE);
    const match = line.slice(-margin).match(/[ \t.,!?][^ \t.,!?]*$/);
    if (match) {
      // Break after the last space or punctuation.
      line = line.slice(0, line.length - (match[0].length - 1));
    } else if (/[=][\da-f]{0,2}$/i.test(line)) {
      // An escape cut in two goes to the next line, and so does a UTF-8 sequence.
      line = trimUtf8Sequence(line.replace(/[=][\da-f]?$/i, ''));
    }
    // Room for the soft break, without cutting an escape.
    if (line.length === LINE) line = line.slice(0, line.length - (/[=][\da-f]{2}$/i.test(line) ? 3 : 1));
    pos += escapeHyphen ? line.length - 2 : line.length;
    result += line + '=\r\n';
  }
  return result;
}

/** The line without the escapes of its last multi-byte UTF-8 sequence, unless that is all it holds. */
function trimUtf8Sequence(line: string): string {
  let end = line.length;
  while (end >= 3 && line.charCodeAt(end - 3) === 0x3d) {
    const code = parseInt(line.slice(end - 2, end), 16);
    if (!/^[\da-f]{2}$/i.test(line.slice(end - 2, end)) || code < 0x80) break;
    end -= 3;
    // The lead byte of the sequence.
    if (code >= 0xc0) break;
  }
  return end > (line.startsWith('=2D') ? 3 : 0) ? line.slice(0, end) : line;
}
