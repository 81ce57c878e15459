/**
 * Synchronous, incremental Content-Transfer-Encoding codecs (RFC 2045 sections 6.7, 6.8), so a
 * stage can decode and encode a part chunk by chunk by function calls, without a stream and
 * its asynchronous hand-offs per part. They give the very bytes mailsplit's streams give, so
 * what a stage judges or masks is what a mail client decodes: base64 and the encoders are
 * mailsplit's own streams (libbase64's, libqp's) run by calling them; quoted-printable is
 * decoded by ours, since libqp's Decoder holds the whole part (see below).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { MimeNode } from '@zone-eu/mailsplit';

/** Decodes or encodes one part's body, chunk by chunk. */
export interface BodyCoder {
  /** The bytes for this chunk (may hold back a few bytes, or the current line, for the next). */
  push(chunk: Buffer): Buffer;
  /** Whatever was held back, at the end of the body. */
  end(): Buffer;
}

/** A decoder: what the attachments stage and masking read a part through. */
export type BodyDecoder = BodyCoder;

const empty = Buffer.alloc(0);
const unchanged: () => BodyCoder = () => ({ push: (chunk) => chunk, end: () => empty });

/**
 * The decoder for a part's transfer encoding. A lenient base64 decoder of our own that dropped
 * `=` read base64 padded line by line as garbage, where libbase64 (and so mailparser and mail
 * clients) decodes each padded run: content sniffing could be passed that way. Anything but
 * base64 and quoted-printable passes through.
 */
export function bodyDecoder(node: MimeNode): BodyDecoder {
  // mailsplit has normalised the node's encoding already (comments out, lower case).
  return decoderFor(node.encoding || '');
}

/** mailsplit hands out its base64 decoder (libbase64's) from a node; getDecoder reads nothing but the node's encoding, so one node serves. */
const BASE64_NODE = (() => {
  const node = new MimeNode(false);
  node.addHeaderChunk(Buffer.from('Content-Transfer-Encoding: base64\r\n\r\n'));
  node.parseHeaders();
  return node;
})();

/**
 * The decoder for a Content-Transfer-Encoding by name: a parsed part's (bodyDecoder), or one
 * named in bytes read without a Splitter (an attached message's part read as raw text, a part
 * read another way than declared). As mailsplit reads it: comments out, case ignored.
 */
export function transferDecoder(encoding: string | false | undefined): BodyDecoder {
  return decoderFor(
    (encoding || '')
      .replace(/\([^)]*\)/g, '')
      .trim()
      .toLowerCase(),
  );
}

function decoderFor(encoding: string): BodyDecoder {
  switch (encoding) {
    case 'base64':
      return calledDirectly(BASE64_NODE.getDecoder() as Transform);
    case 'quoted-printable':
      return new QuotedPrintableBodyDecoder();
    default:
      return unchanged();
  }
}

/** The encoder mailsplit's Joiner would use for the part (libbase64's, libqp's: lines of 76), run by calling it. */
export function bodyEncoder(node: MimeNode): BodyCoder {
  return node.encoding === 'base64' || node.encoding === 'quoted-printable' ? calledDirectly(node.getEncoder() as Transform) : unchanged();
}

/**
 * A Transform whose `_transform` and `_flush` call back at once (libbase64's and libqp's do)
 * run as plain calls: what it pushes is collected and returned.
 */
function calledDirectly(stream: Transform): BodyCoder {
  const out: Buffer[] = [];
  let calledBack = false;
  stream.push = (chunk: Buffer | string | null) => {
    if (chunk !== null && chunk.length) out.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
    return true;
  };
  const done: TransformCallback = (err, data) => {
    calledBack = true;
    if (err) throw err;
    if (data != null) stream.push(data);
  };
  // Bytes a stream pushed later would be lost: one that does not call back at once is a bug here.
  const take = () => {
    if (!calledBack) throw new Error(`${stream.constructor.name} did not call back at once: it cannot be run by function calls`);
    calledBack = false;
    const bytes = out.length === 1 ? out[0]! : out.length ? Buffer.concat(out) : empty;
    out.length = 0;
    return bytes;
  };
  return {
    push(chunk) {
      stream._transform(chunk, 'binary', done);
      return take();
    },
    end() {
      if (stream._flush) stream._flush(done);
      else calledBack = true;
      return take();
    },
  };
}

/** Raw text the stream decoder holds back at most, waiting to see what follows it. */
const QP_HELD = 64 * 1024;
const isBlank = (code: number) => code === 0x20 || code === 0x09;
function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
}
// A hex digit's value ("A" and "a" alike), for a character isHex accepted.
const hexValue = (c: number) => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57);

/**
 * Quoted-printable decoding as libqp decodes (mailsplit's `getDecoder()`), chunk by chunk,
 * holding at most 64 KiB: libqp's own Decoder keeps the whole part and decodes it when the
 * part ends, so a 20 MB part sat in memory and then held the event loop for one long decode (a
 * 1 MiB line: 35 ms). The same two passes, on as much as is settled: white space at the end of
 * a line removed (RFC 2045 6.7 rule 3) and soft line breaks joined, then `=XX` escapes.
 * Held back until more arrives: an escape or soft line break cut by the chunk boundary, and
 * white space a line end would remove. Past 64 KiB of that (a line of nothing but blanks and
 * `=`), the start of it is decoded as it stands.
 */
export class QuotedPrintableBodyDecoder implements BodyDecoder {
  /** Raw input not yet settled. */
  #raw = '';
  /** Text after the first pass whose escape is cut in two ("=" or "=X" at its end). */
  #joined = '';

  push(chunk: Buffer): Buffer {
    const data = this.#raw + chunk.toString('latin1');
    let cut = data.length;
    for (let before = -1; cut !== before && data.length - cut <= QP_HELD;) {
      before = cut;
      // A CR may be the first half of the line end that makes "= \r\n" a soft line break.
      if (data.charCodeAt(cut - 1) === 0x0d) cut--;
      while (cut > 0 && isBlank(data.charCodeAt(cut - 1))) cut--;
      const eq = data.lastIndexOf('=', cut - 1);
      if (eq >= 0 && cut - eq < 3) cut = eq;
    }
    cut = Math.max(cut, data.length - QP_HELD);
    this.#raw = data.slice(cut);
    return this.#decode(data.slice(0, cut), false);
  }

  end(): Buffer {
    const out = this.#decode(this.#raw, true);
    this.#raw = '';
    return out;
  }

  #decode(text: string, final: boolean): Buffer {
    const joined =
      this.#joined +
      text
        // A line's trailing white space; the lead group keeps the regex linear (as libqp's).
        .replace(final ? /(^|[^ \t])[ \t]+(?=[\n\r]|$)/g : /(^|[^ \t])[ \t]+(?=[\n\r])/g, '$1')
        .replace(final ? /=(?:\r?\n|$)/g : /=\r?\n/g, '');
    let end = joined.length;
    if (!final) {
      const eq = joined.lastIndexOf('=', end - 1);
      if (eq >= 0 && end - eq < 3) end = eq;
    }
    this.#joined = joined.slice(end);
    return decodeEscapes(joined, end);
  }
}

/** {@link QuotedPrintableBodyDecoder} as a stream, in place of libqp's Decoder. */
export class QuotedPrintableDecodeStream extends Transform {
  readonly #decoder = new QuotedPrintableBodyDecoder();

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const out = this.#decoder.push(chunk);
    done(null, out.length ? out : undefined);
  }

  override _flush(done: TransformCallback): void {
    const out = this.#decoder.end();
    done(null, out.length ? out : undefined);
  }
}

/** `=XX` escapes of the first `end` characters decoded, every other character its byte (as libqp). */
function decodeEscapes(text: string, end: number): Buffer {
  const out = Buffer.allocUnsafe(end);
  let o = 0;
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i);
    const hi = text.charCodeAt(i + 1);
    const lo = text.charCodeAt(i + 2);
    if (code === 0x3d && i < end - 2 && isHex(hi) && isHex(lo)) {
      out[o++] = hexValue(hi) * 16 + hexValue(lo);
      i += 2;
    } else out[o++] = code;
  }
  return out.subarray(0, o);
}
